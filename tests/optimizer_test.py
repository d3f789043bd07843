"""AdamW schedule, weight-decay mask and trainable mask."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from llmjax.train import optimizer as optim_lib


def optim(**kw):
  return ml_collections.ConfigDict(
    {
      **dict(
        learning_rate=1.0,
        min_lr_ratio=0.1,
        beta1=0.9,
        beta2=0.95,
        eps=1e-8,
        weight_decay=0.1,
        warmup_steps=4,
        grad_clip=1.0,
      ),
      **kw,
    }
  )


def test_schedule_warms_up_linearly_then_decays_to_the_floor():
  schedule = optim_lib.learning_rate_schedule(optim(), 20)
  np.testing.assert_allclose([float(schedule(s)) for s in (0, 2, 4)], [0.0, 0.5, 1.0])
  assert float(schedule(20)) == np.float32(0.1)
  assert float(schedule(12)) < 1.0


def test_decay_mask_spares_biases_norms_and_embeddings():
  params = {"wte": {"embedding": 0}, "h": {"attn": {"kernel": 0, "bias": 0}}, "ln_f": {"scale": 0}}
  mask = optim_lib.decay_mask(params)
  assert mask == {
    "wte": {"embedding": False},
    "h": {"attn": {"kernel": True, "bias": False}},
    "ln_f": {"scale": False},
  }


def test_trainable_mask_freezes_leaves_and_keeps_no_moments_for_them():
  params = {"a": jnp.ones((3,)), "b": jnp.ones((2,))}
  mask = {"a": True, "b": False}
  for trainable in (mask, lambda p: mask):  # A tree, or a function of the params.
    tx = optim_lib.make_optimizer(optim(warmup_steps=0), 10, trainable)
    state = tx.init(params)
    updates, _ = tx.update({"a": jnp.ones((3,)), "b": jnp.ones((2,))}, state, params)
    assert float(jnp.abs(updates["a"]).sum()) > 0
    np.testing.assert_array_equal(updates["b"], 0.0)
    moments = [x.shape for x in jax.tree.leaves(state) if getattr(x, "ndim", 0) == 1]
    assert (2,) not in moments  # Frozen "b" has no Adam moments.
