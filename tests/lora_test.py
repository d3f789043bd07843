"""LoRA attention: zero-initialised adapters, frozen bases, fused == unfused == merged."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llmjax.models import layers
from llmjax.models import lora as lora_lib

CFG = layers.BlockConfig(n_embd=16, n_head=2)


def x_input():
  return jax.random.normal(jax.random.key(0), (2, 8, 16))


def randomise_adapters(module, seed=1):
  """Gives every adapter factor (including the zero-initialised B) random values."""
  state = nnx.state(module)
  flat = nnx.to_pure_dict(state)
  keys = iter(jax.random.split(jax.random.key(seed), 64))

  def fill(path, x):
    name = str(path[-1].key)
    return 0.1 * jax.random.normal(next(keys), x.shape) if name.startswith("lora_") else x

  nnx.replace_by_pure_dict(state, jax.tree_util.tree_map_with_path(fill, flat))
  nnx.update(module, state)


def test_fresh_adapter_computes_exactly_the_base_attention():
  base = layers.Attention(CFG, rngs=nnx.Rngs(0))
  for fused in (True, False):
    adapted = lora_lib.LoraAttention(
      CFG, lora_lib.LoraConfig(rank=4, fused=fused), rngs=nnx.Rngs(0)
    )
    params = nnx.to_pure_dict(nnx.state(adapted))
    assert not np.any(params["lora_qkv_b"]) and not np.any(params["lora_proj_b"])
    assert np.any(params["lora_qkv_a"])
    plain = {k: v for k, v in params.items() if not k.startswith("lora_")}
    state = nnx.state(base)
    nnx.replace_by_pure_dict(state, plain)
    nnx.update(base, state)
    np.testing.assert_array_equal(adapted(x_input())[0], base(x_input())[0])


@pytest.mark.parametrize("targets", [("qkv", "proj"), ("qkv",), ("proj",)])
def test_merged_equals_unmerged_for_trained_adapters(targets):
  out = {}
  for fused in (True, False):
    attn = lora_lib.LoraAttention(
      CFG, lora_lib.LoraConfig(rank=4, alpha=8.0, targets=targets, fused=fused), rngs=nnx.Rngs(0)
    )
    randomise_adapters(attn)
    out[fused] = attn(x_input())[0]
    merged = lora_lib.merge_attention(nnx.to_pure_dict(nnx.state(attn)), attn.lora)
    assert sorted(merged) == sorted(lora_lib.BASE_NAMES)
    plain = layers.Attention(CFG, rngs=nnx.Rngs(5))
    state = nnx.state(plain)
    nnx.replace_by_pure_dict(state, merged)
    nnx.update(plain, state)
    np.testing.assert_allclose(plain(x_input())[0], out[fused], atol=1e-5, rtol=0)
  np.testing.assert_allclose(out[True], out[False], atol=1e-5, rtol=0)
  base = layers.Attention(CFG, rngs=nnx.Rngs(0))  # Same seed: the adapters' base weights.
  assert np.abs(base(x_input())[0] - out[True]).max() > 1e-3  # The adapters do something.


@pytest.mark.parametrize("fused", [True, False])
def test_base_weights_get_no_gradient_and_are_marked_frozen(fused):
  attn = lora_lib.LoraAttention(CFG, lora_lib.LoraConfig(rank=4, fused=fused), rngs=nnx.Rngs(0))
  randomise_adapters(attn)
  graphdef, state = nnx.split(attn)
  params = nnx.to_pure_dict(state)

  def loss(p):
    model = nnx.merge(graphdef, p)
    return jnp.sum(model(x_input())[0] ** 2)

  grads = jax.grad(loss)(params)
  mask = lora_lib.frozen_mask(params)
  for name in lora_lib.BASE_NAMES:
    assert mask[name] and not np.any(grads[name]), name
  for name in ("lora_qkv_a", "lora_qkv_b", "lora_proj_a", "lora_proj_b"):
    assert not mask[name] and np.any(grads[name]), name
  plain = nnx.to_pure_dict(nnx.state(layers.Block(CFG, rngs=nnx.Rngs(0))))
  assert not any(jax.tree.leaves(lora_lib.frozen_mask(plain)))


def test_bad_settings_name_the_key():
  with pytest.raises(ValueError, match="lora.targets"):
    lora_lib.LoraConfig(targets=("q",))
  with pytest.raises(ValueError, match="lora.rank"):
    lora_lib.LoraConfig(rank=0)
  assert lora_lib.parse_targets(" qkv, proj ") == ("qkv", "proj")
