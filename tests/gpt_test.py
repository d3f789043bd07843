"""GPT model: shapes, causality, init, dtype handling, scan == unrolled."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llmjax import models
from llmjax.models import gpt

TINY = dict(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=32)


def tiny(**kw):
  return gpt.GPTConfig(**{**TINY, **kw})


def test_logits_shape_and_padded_vocab():
  model = models.build(tiny(), seed=0)
  tokens = jnp.zeros((3, 10), jnp.int32)
  assert model(tokens).shape == (3, 10, 97)
  assert model(tokens).dtype == jnp.float32
  assert model.wte.shape == (128, 32)  # 97 padded to a multiple of 64


@pytest.mark.parametrize("scan", [False, True])
def test_causality_gradient_of_position_t_wrt_later_inputs_is_zero(scan):
  model = models.build(tiny(scan_layers=scan), seed=0)
  tokens = jax.random.randint(jax.random.key(1), (1, 12), 0, 97)
  embeddings = model.wte[...][tokens]
  t = 5

  def logits_at_t(emb):
    x = emb + model.wpe[...][:12][None]
    x, _ = gpt.apply_blocks(model.h, x, scanned=scan, remat="none")
    return model.unembed(model.ln_f(x))[0, t].sum()

  grad = jax.grad(logits_at_t)(embeddings)[0]
  assert np.abs(np.asarray(grad[t + 1 :])).max() == 0.0
  assert np.abs(np.asarray(grad[: t + 1])).max() > 0.0


def test_gpt2_init_scales_residual_projections():
  model = models.build(tiny(n_layer=8, n_embd=64, n_head=4), seed=0)
  proj = np.asarray(model.h[0].mlp.c_proj[...])
  fc = np.asarray(model.h[0].mlp.c_fc[...])
  assert fc.std() == pytest.approx(0.02, rel=0.05)
  assert proj.std() == pytest.approx(0.02 / np.sqrt(16), rel=0.05)


def test_same_seed_same_params_different_seed_differs():
  a = nnx.to_pure_dict(nnx.state(models.build(tiny(), 0)))
  b = nnx.to_pure_dict(nnx.state(models.build(tiny(), 0)))
  c = nnx.to_pure_dict(nnx.state(models.build(tiny(), 1)))
  assert all(jax.tree.leaves(jax.tree.map(lambda x, y: bool((x == y).all()), a, b)))
  assert not all(jax.tree.leaves(jax.tree.map(lambda x, y: bool((x == y).all()), a, c)))


def test_scanned_and_unrolled_compute_the_same_function():
  unrolled = models.build(tiny(), 0)
  scanned = models.build(tiny(scan_layers=True), 0)
  # Copy the unrolled block weights into the stacked layout.
  stacked = jax.tree.map(
    lambda *xs: jnp.stack(xs), *[nnx.to_pure_dict(nnx.state(b)) for b in unrolled.h]
  )
  nnx.update(scanned.h, stacked)
  for name in ("wte", "wpe"):
    getattr(scanned, name)[...] = getattr(unrolled, name)[...]
  tokens = jax.random.randint(jax.random.key(0), (2, 16), 0, 97)
  np.testing.assert_allclose(scanned(tokens), unrolled(tokens), atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = models.build(tiny(dtype=jnp.bfloat16), 0)
  logits = model(jnp.zeros((1, 4), jnp.int32))
  assert logits.dtype == jnp.float32
  assert model.wte[...].dtype == jnp.float32


def test_dropout_changes_training_forward_only():
  model = models.build(tiny(dropout=0.5), 0)
  tokens = jnp.ones((1, 8), jnp.int32)
  eval_a, eval_b = model(tokens), model(tokens)
  train = model(tokens, dropout_key=jax.random.key(0))
  np.testing.assert_array_equal(eval_a, eval_b)
  assert not np.allclose(train, eval_a)


def test_too_long_input_is_rejected_with_the_limit():
  model = models.build(tiny(), 0)
  with pytest.raises(ValueError, match="block_size=16"):
    model(jnp.zeros((1, 17), jnp.int32))


def test_unknown_arch_lists_available():
  import ml_collections

  cfg = ml_collections.ConfigDict({"arch": "nope"})
  with pytest.raises(ValueError, match="available: .*gpt"):
    models.build(cfg, 0)
