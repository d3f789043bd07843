"""The encoder module on its own: config validation, shapes, masks, relative positions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llmjax.models.encoder import Encoder, EncoderConfig
from llmjax.models.relative_positions import relative_positions

TINY = dict(
  vocab_size=50,
  hidden_size=12,
  num_layers=2,
  num_heads=2,
  intermediate_size=20,
  max_position_embeddings=16,
)


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(family="gpt"), "unknown encoder family 'gpt'"),
    (dict(hidden_size=10, num_heads=3), "hidden_size=10 is not divisible by num_heads=3"),
    (dict(pos_att_type=("c2p", "x2y")), r"unknown entries \['x2y'\]"),
    (dict(activation="gelu2"), "unknown activation 'gelu2'"),
    (dict(num_layer_groups=3), r"num_layer_groups=3 must lie in \[1, num_layers=2\]"),
  ],
)
def test_config_validation(kwargs, message):
  with pytest.raises(ValueError, match=message):
    EncoderConfig(**{**TINY, **kwargs})


def test_layer_schedule_shares_groups():
  cfg = EncoderConfig(**{**TINY, "num_layers": 12, "num_layer_groups": 1})
  assert cfg.layer_schedule() == [0] * 12 and cfg.num_stored_layers == 1
  cfg = EncoderConfig(**{**TINY, "num_layers": 4, "num_layer_groups": 2, "inner_group_size": 2})
  assert cfg.layer_schedule() == [0, 1, 0, 1, 2, 3, 2, 3] and cfg.num_stored_layers == 4
  assert EncoderConfig(**TINY).layer_schedule() == [0, 1]


def test_relative_positions():
  np.testing.assert_array_equal(relative_positions(3, -1, -1), [[0, -1, -2], [1, 0, -1], [2, 1, 0]])
  rel = relative_positions(40, bucket_size=8, max_position=32)
  assert rel[10, 7] == 3 and rel[7, 10] == -3  # |d| < bucket_size / 2: exact
  np.testing.assert_array_equal(rel, -rel.T)
  assert np.all(np.diff(rel[-1]) <= 0)  # monotone in the distance
  assert rel[39, 0] == 8 < 39  # far distances are compressed logarithmically


def _init(cfg: EncoderConfig, seed: int = 0) -> Encoder:
  """Random weights drawn with numpy: eager jax init would compile every initializer."""
  graphdef, state = nnx.split(nnx.eval_shape(lambda: Encoder(cfg, rngs=nnx.Rngs(0))))
  rng = np.random.default_rng(seed)
  state = jax.tree.map(lambda x: jnp.asarray(rng.normal(0, 0.5, x.shape), x.dtype), state)
  assert all(x.dtype == cfg.param_dtype for x in jax.tree.leaves(state))
  return nnx.merge(graphdef, state)


@nnx.jit
def _forward(model, ids, mask):
  return model(ids, mask, output_hidden_states=True)


def _ids(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(1, TINY["vocab_size"], shape))


@pytest.mark.parametrize(
  "kwargs",
  [
    dict(family="albert", embedding_size=8, num_layers=3, num_layer_groups=2),
    dict(
      family="deberta-v2",
      head_dim=5,
      relative_attention=True,
      pos_att_type=("c2p", "p2c"),
      position_buckets=4,
      absolute_positions=False,
      type_vocab_size=0,
      conv_kernel_size=3,
    ),
  ],
)
def test_shapes_and_hidden_state_count(kwargs):
  cfg = EncoderConfig(**{**TINY, **kwargs})
  model = _init(cfg)
  ids = _ids((2, 7))
  last, hidden = _forward(model, ids, jnp.ones((2, 7), jnp.int32))
  assert last.shape == (2, 7, 12)
  assert len(hidden) == 1 + len(cfg.layer_schedule())
  np.testing.assert_array_equal(hidden[-1], last)
  assert np.all(np.isfinite(np.asarray(last)))
  if cfg.head_dim:
    assert model.layers[0].attn.query.kernel.shape == (12, 2 * 5)


def test_no_mask_means_all_tokens_and_padding_is_ignored():
  model = _init(EncoderConfig(**TINY), seed=1)
  ids = _ids((2, 6))
  mask = jnp.array([[1] * 6, [1, 1, 1, 0, 0, 0]])
  full, _ = _forward(model, ids, jnp.ones_like(mask))
  no_mask, _ = _forward(model, ids, None)
  np.testing.assert_allclose(np.asarray(no_mask), np.asarray(full), atol=1e-6)
  masked, _ = _forward(model, ids, mask)
  other_pad, _ = _forward(model, ids.at[1, 3:].set(7), mask)
  np.testing.assert_allclose(np.asarray(masked[1, :3]), np.asarray(other_pad[1, :3]), atol=1e-6)
  assert not np.allclose(np.asarray(masked[1, :3]), np.asarray(full[1, :3]), atol=1e-3)
  np.testing.assert_allclose(np.asarray(masked[0]), np.asarray(full[0]), atol=1e-6)


def test_param_dtype():
  cfg = EncoderConfig(**TINY, dtype="bfloat16", param_dtype=jnp.bfloat16)
  assert cfg.dtype == cfg.param_dtype == jnp.dtype(jnp.bfloat16)
  model = _init(cfg)
  dtypes = {v.get_value().dtype for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  assert dtypes == {jnp.dtype(jnp.bfloat16)}
  last, _ = _forward(model, _ids((1, 4)), jnp.ones((1, 4), jnp.int32))
  assert last.dtype == jnp.bfloat16
