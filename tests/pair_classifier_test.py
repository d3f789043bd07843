"""Pair classifier module: pooling, order symmetry, freezing masks and bit-exact frozen params."""

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from ml_collections import ConfigDict

from llmjax.config import load as config_load
from llmjax.models import pair_classifier as pc
from llmjax.models.encoder import Encoder, EncoderConfig
from llmjax.pretrained import from_hf, hf_import, random_init, weights
from llmjax.train import build_classifier, classify
from llmjax.train import optimizer as optim_lib
from llmjax.train import step as step_lib
from llmjax.util import errors

B, T = 4, 12


def tiny_model(num_layers=3, seed=0):
  cfg = EncoderConfig(
    family="bert",
    vocab_size=50,
    hidden_size=16,
    num_layers=num_layers,
    num_heads=2,
    intermediate_size=32,
    max_position_embeddings=T,
  )
  encoder = Encoder(cfg, rngs=nnx.Rngs(params=seed))
  return pc.PairClassifier(
    encoder, pc.HeadConfig(hidden=8, dropout=0.0), rngs=nnx.Rngs(params=seed + 1)
  )


def batch(seed=0):
  rng = np.random.default_rng(seed)
  out = {"labels": rng.integers(0, 3, B).astype(np.int32)}
  for side in ("a", "b"):
    lengths = rng.integers(3, T + 1, B)
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
    out[f"ids_{side}"] = (rng.integers(1, 50, (B, T)) * mask).astype(np.int32)
    out[f"mask_{side}"] = mask
    out[f"types_{side}"] = np.zeros((B, T), np.int32)
  return out


def test_pooling_ignores_padding():
  hidden = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
  mask = jnp.array([[1, 1, 0], [1, 0, 0]])
  np.testing.assert_allclose(pc.pool(hidden, mask, "mean"), [[1, 2], [6, 7]])
  np.testing.assert_allclose(pc.pool(hidden, mask, "cls"), [[0, 1], [6, 7]])
  with pytest.raises(ValueError, match="pooling='max'"):
    pc.HeadConfig(pooling="max")


def test_both_orders_prediction_is_order_symmetric():
  model = tiny_model()
  a, b = classify.sides(batch())
  predict = nnx.jit(pc.predict_probs, static_argnames="both_orders")
  ab = predict(model, a, b, both_orders=True)
  ba = predict(model, b, a, both_orders=True)
  np.testing.assert_allclose(ab, pc.swap_probs(ba), atol=1e-6)
  np.testing.assert_allclose(ab.sum(-1), 1.0, atol=1e-6)
  one_order = predict(model, a, b, both_orders=False)
  assert not np.allclose(one_order, pc.swap_probs(predict(model, b, a, both_orders=False)))


def test_swap_sides_relabels():
  data = batch()
  swap = np.array([True, False, True, False])
  out = classify.swap_sides(data, swap)
  np.testing.assert_array_equal(out["ids_a"][0], data["ids_b"][0])
  np.testing.assert_array_equal(out["mask_b"][2], data["mask_a"][2])
  np.testing.assert_array_equal(out["ids_a"][1], data["ids_a"][1])
  want = [(1, 0, 2)[y] if s else y for y, s in zip(data["labels"], swap)]
  np.testing.assert_array_equal(out["labels"], want)


def test_trainable_mask_modes():
  params = nnx.to_pure_dict(nnx.state(tiny_model()))
  flat = lambda m: {
    jax.tree_util.keystr(p): v
    for p, v in jax.tree_util.tree_flatten_with_path(m)[0]  # noqa: E731
  }
  bottom = flat(pc.trainable_mask(params, "bottom_frozen", 1))
  assert not bottom["['encoder']['embed']['word']['embedding']"]
  assert not bottom["['encoder']['layers'][0]['ffn_in']['kernel']"]
  assert bottom["['encoder']['layers'][1]['ffn_in']['kernel']"]
  assert bottom["['head_out']['bias']"]
  frozen = flat(pc.trainable_mask(params, "frozen"))
  assert [k for k, v in frozen.items() if v] == [k for k in frozen if "encoder" not in k]
  assert all(flat(pc.trainable_mask(params, "full")).values())
  with pytest.raises(ValueError, match="frozen_layers=4 must lie in \\[0, 3\\]"):
    pc.trainable_mask(params, "bottom_frozen", 4)
  with pytest.raises(ValueError, match="freeze mode 'half'"):
    pc.trainable_mask(params, "half")


@pytest.mark.parametrize("mode, k", [("frozen", 0), ("bottom_frozen", 2), ("full", 0)])
def test_frozen_parameters_stay_bit_identical(mode, k):
  model = tiny_model()
  # A negative zero survives only if frozen weights never see `p + 0.0`.
  model.encoder.layers[0].ffn_in.kernel[...] = (
    model.encoder.layers[0].ffn_in.kernel[...].at[0, 0].set(-0.0)
  )
  graphdef, state = nnx.split(model)
  params = nnx.to_pure_dict(state)
  mask = pc.trainable_mask(params, mode, k)
  optim = ConfigDict(
    dict(
      learning_rate=1e-2,
      min_lr_ratio=0.1,
      beta1=0.9,
      beta2=0.99,
      eps=1e-8,
      weight_decay=0.1,
      warmup_steps=0,
      grad_clip=1.0,
    )
  )
  tx = optim_lib.make_optimizer(optim, 10, mask)
  schedule = optax.constant_schedule(1e-2)
  step = jax.jit(
    step_lib.make_train_step(
      classify.classify_loss(graphdef, mask, dropout=False), tx, schedule, seed=0, trainable=mask
    )
  )
  state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}
  before = jax.tree.map(np.asarray, params)
  for i in range(3):
    state, metrics = step(state, jax.tree.map(lambda x: x[None], batch(i)))
  assert np.isfinite(float(metrics["train_loss"]))
  after = jax.tree.map(np.asarray, state["params"])
  paths = jax.tree_util.tree_flatten_with_path(before)[0]
  for (path, old), new, trains in zip(paths, jax.tree.leaves(after), jax.tree.leaves(mask)):
    name = jax.tree_util.keystr(path)
    if trains:
      assert not np.array_equal(old, new), f"{name} should have trained"
    else:
      assert old.tobytes() == new.tobytes(), f"{name} changed while frozen"
  first = after["encoder"]["layers"][0]["ffn_in"]["kernel"][0, 0]
  if mode != "full":
    assert np.signbit(first) and first == 0.0
  # No optimizer moments are kept for frozen parameters.
  n_state = sum(x.size for x in jax.tree.leaves(state["opt_state"]) if x.ndim)
  n_trainable = sum(p.size for p, t in zip(jax.tree.leaves(before), jax.tree.leaves(mask)) if t)
  assert n_state == 2 * n_trainable


def test_random_mode_loads_no_pretrained_weights(monkeypatch):
  """freeze='random': the checkpoint's shapes, a seeded transformers-style init, nothing
  read from the weight file, every parameter trainable."""
  golden = pathlib.Path(__file__).parent / "goldens" / "deberta"
  cc = config_load.load_config("configs/arena_classifier.py:smoke").classifier.unlock()
  cc.update(init_from=str(golden), tokenizer="synthetic", freeze="random")

  def refuse(*args, **kwargs):
    raise AssertionError("random mode read pretrained weights")

  for module, name in (
    (weights, "load_tensors"),
    (weights, "load_torch_bin"),
    (weights, "checkpoint_files"),
    (hf_import, "load_encoder_weights"),
  ):
    monkeypatch.setattr(module, name, refuse)
  model, _ = build_classifier.build_model(cc, seed=5)
  again, _ = build_classifier.build_model(cc, seed=5)
  other, _ = build_classifier.build_model(cc, seed=6)
  monkeypatch.undo()
  pretrained, cfg = from_hf(golden)
  assert model.encoder.cfg == dataclasses.replace(cfg, hidden_dropout=0.0, attention_dropout=0.0)

  flat = lambda m: dict(nnx.to_flat_state(nnx.state(m)))  # noqa: E731
  ours, same, different, theirs = (
    flat(m) for m in (model.encoder, again.encoder, other.encoder, pretrained)
  )
  assert ours.keys() == theirs.keys()
  for path, var in ours.items():
    value = np.asarray(var.get_value())
    assert value.shape == theirs[path].get_value().shape, path
    np.testing.assert_array_equal(value, same[path].get_value())
    assert not np.array_equal(value, theirs[path].get_value()), path
    leaf = str(path[-1])
    if leaf in ("kernel", "embedding"):
      assert abs(value.std() - 0.02) < 0.004, path  # initializer_range
      assert not np.array_equal(value, different[path].get_value()), path
    else:
      np.testing.assert_array_equal(value, 1.0 if leaf == "scale" else 0.0)
  np.testing.assert_array_equal(model.encoder.embed.word.embedding[...][cfg.pad_token_id], 0.0)
  params = nnx.to_pure_dict(nnx.state(model))
  assert all(jax.tree.leaves(pc.trainable_mask(params, "random")))
  with pytest.raises(errors.ConfigError, match="is a GPT-2 checkpoint, not an encoder"):
    random_init.random_from_hf(golden.parent / "gpt2", seed=0)
