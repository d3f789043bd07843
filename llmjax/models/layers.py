"""Transformer building blocks shared by llmjax's language models.

Parameters carry `logical_axes` metadata (e.g. `('embed', 'mlp')`); `llmjax.parallel.mesh`
maps those names to mesh axes, so models never mention devices.

Shape suffixes: B batch, T query length, S key length, D width, H heads, K head dim,
F MLP hidden, V vocabulary.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from llmjax.parallel import mesh as mesh_lib

KVCache = dict[str, jax.Array]  # One layer's: {'k': NxKxS, 'v': NxSxK}, N = batch x heads.


def empty_kv_cache(
  batch: int, n_head: int, head_dim: int, length: int, dtype, leading: tuple[int, ...] = ()
) -> KVCache:
  """A zero KV cache in `Attention.attend_cached`'s layout, with optional leading axes
  (the layer axis of a scanned stack)."""
  n = batch * n_head
  return {
    "k": jnp.zeros((*leading, n, head_dim, length), dtype),
    "v": jnp.zeros((*leading, n, length, head_dim), dtype),
  }


@dataclasses.dataclass(frozen=True)
class BlockConfig:
  """What one pre-LayerNorm transformer block needs to know."""

  n_embd: int
  n_head: int
  mlp_ratio: int = 4
  mlp_hidden: int = 0  # MLP hidden width F; 0 = mlp_ratio * n_embd.
  n_layer: int = 1  # Used only for the GPT-2 scaled init of residual projections.
  dropout: float = 0.0
  bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention: str = "auto"  # auto | xla | cudnn

  @property
  def head_dim(self) -> int:
    return self.n_embd // self.n_head

  @property
  def mlp_dim(self) -> int:
    return self.mlp_hidden or self.mlp_ratio * self.n_embd


def normal_param(rngs: nnx.Rngs, shape, std: float, dtype, axes) -> nnx.Param:
  return nnx.Param(std * jax.random.normal(rngs.params(), shape, dtype), logical_axes=axes)


def zeros_param(shape, dtype, axes) -> nnx.Param:
  return nnx.Param(jnp.zeros(shape, dtype), logical_axes=axes)


def constrain(x: jax.Array, logical_axes: tuple[str | None, ...]) -> jax.Array:
  """Pins an activation's sharding by logical axis names when traced under a mesh
  (`jax.sharding.use_abstract_mesh`, as the trainer does); a no-op otherwise."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  spec = mesh_lib.logical_to_spec(logical_axes, x.ndim, x.shape, mesh)
  return jax.lax.with_sharding_constraint(x, spec)


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
  """Inverted dropout; identity when `key` is None (evaluation) or rate is 0."""
  if key is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def split_key(key: jax.Array | None, n: int):
  return [None] * n if key is None else list(jax.random.split(key, n))


class LayerNorm(nnx.Module):
  """LayerNorm computed in float32, cast back to the compute dtype."""

  def __init__(self, dim: int, *, bias: bool, dtype, param_dtype, eps: float = 1e-5):
    self.scale = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=("norm",))
    self.bias = zeros_param((dim,), param_dtype, ("norm",)) if bias else None
    self.eps = eps
    self.dtype = dtype

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...].astype(jnp.float32)
    if self.bias is not None:
      y = y + self.bias[...].astype(jnp.float32)
    return y.astype(self.dtype)


class Attention(nnx.Module):
  """Multi-head causal self-attention with fused QKV and an optional KV cache."""

  def __init__(self, cfg: BlockConfig, *, rngs: nnx.Rngs):
    d, h, k = cfg.n_embd, cfg.n_head, cfg.head_dim
    self.cfg = cfg
    self.c_attn = normal_param(
      rngs, (d, 3, h, k), 0.02, cfg.param_dtype, ("embed", None, "heads", "head_dim")
    )
    self.c_attn_bias = (
      zeros_param((3, h, k), cfg.param_dtype, (None, "heads", "head_dim")) if cfg.bias else None
    )
    proj_std = 0.02 / (2 * cfg.n_layer) ** 0.5
    self.c_proj = normal_param(
      rngs, (h, k, d), proj_std, cfg.param_dtype, ("heads", "head_dim", "embed")
    )
    self.c_proj_bias = zeros_param((d,), cfg.param_dtype, ("embed",)) if cfg.bias else None

  def __call__(
    self,
    x_BxTxD,
    *,
    mask_BxTxS=None,
    cache: KVCache | None = None,
    pos: jax.Array | None = None,
    dropout_key=None,
  ):
    """Without a cache: causal attention over x (mask_BxTxS replaces the causal mask if given).

    With a cache: see `attend_cached`. Returns (y_BxTxD, new_cache or None).
    """
    if cache is not None:
      y, new_cache = self.attend_cached(x_BxTxD, cache, pos)
      return dropout(self.project_out(y), self.cfg.dropout, dropout_key), new_cache
    q_BxTxHxK, k_BxTxHxK, v_BxTxHxK = self.project_qkv(x_BxTxD)
    impl = None if self.cfg.attention == "auto" else self.cfg.attention
    if jax.default_backend() != "gpu" and impl == "cudnn":
      impl = None
    if mask_BxTxS is None:
      y = jax.nn.dot_product_attention(
        q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, is_causal=True, implementation=impl
      )
    else:
      y = jax.nn.dot_product_attention(
        q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, mask=mask_BxTxS[:, None], implementation=impl
      )
    return dropout(self.project_out(y), self.cfg.dropout, dropout_key), None

  def attend_cached(self, x_BxTxD, cache: KVCache, pos):
    """Attention of the tokens at positions pos..pos+T-1 over a KV cache (decoding).

    The new keys and values are written into the cache first; each query then attends to
    the cache up to its own position. Layouts (`empty_kv_cache`) are the ones XLA's dots
    read as they lie, with batch and heads merged into one leading axis N = B*H: keys
    [N, K, S] (the contracted K before S), values [N, S, K]. With a separate batch axis,
    or with the dots reading the cache as it came in, XLA:CPU copies every layer's cache
    once or twice per token to make the in-place write safe. Returns (y_BxTxHxK, new_cache).
    """
    dt = self.cfg.dtype
    b, t = x_BxTxD.shape[:2]
    h, k = self.cfg.n_head, self.cfg.head_dim
    q_BxTxHxK, k_BxTxHxK, v_BxTxHxK = self.decode_qkv(x_BxTxD)
    k_NxKxT = jnp.einsum("bthk->bhkt", k_BxTxHxK).reshape(b * h, k, t)
    v_NxTxK = jnp.einsum("bthk->bhtk", v_BxTxHxK).reshape(b * h, t, k)
    new_cache = {
      "k": jax.lax.dynamic_update_slice_in_dim(
        cache["k"], k_NxKxT.astype(cache["k"].dtype), pos, axis=2
      ),
      "v": jax.lax.dynamic_update_slice_in_dim(
        cache["v"], v_NxTxK.astype(cache["v"].dtype), pos, axis=1
      ),
    }
    s = cache["v"].shape[1]
    q_NxTxK = jnp.einsum("bthk->bhtk", q_BxTxHxK).reshape(b * h, t, k)
    scores_NxTxS = (
      jnp.einsum(
        "ntk,nks->nts", q_NxTxK, new_cache["k"].astype(dt), preferred_element_type=jnp.float32
      )
      / float(k) ** 0.5
    )
    visible_TxS = jnp.arange(s)[None, :] <= pos + jnp.arange(t)[:, None]
    probs_NxTxS = jax.nn.softmax(jnp.where(visible_TxS, scores_NxTxS, -jnp.inf), axis=-1).astype(dt)
    y_NxTxK = jnp.einsum("nts,nsk->ntk", probs_NxTxS, new_cache["v"].astype(dt))
    return jnp.einsum("bhtk->bthk", y_NxTxK.reshape(b, h, t, k)), new_cache

  def decode_qkv(self, x_BxTxD):
    """`project_qkv` for decoding. The plain projection is computed with the weight's own
    (D, 3, H, K) axis order kept in the result: asked for the q/k/v axis first, XLA:CPU
    transposes the whole weight on every call, which at batch 1 costs as much as reading
    it. (Training keeps `project_qkv` as it is, so its numerics do not move.) Subclasses
    that override `project_qkv` (adapters) keep their own projection."""
    if type(self).project_qkv is not Attention.project_qkv:
      return self.project_qkv(x_BxTxD)
    dt = self.cfg.dtype
    qkv_BxTx3xHxK = jnp.einsum("btd,dchk->btchk", x_BxTxD, self.c_attn[...].astype(dt))
    if self.c_attn_bias is not None:
      qkv_BxTx3xHxK = qkv_BxTx3xHxK + self.c_attn_bias[...].astype(dt)
    return jnp.moveaxis(qkv_BxTx3xHxK, 2, 0)

  def project_qkv(self, x_BxTxD):
    """Queries, keys and values: a [3, B, T, H, K] array (subclasses may add adapters)."""
    dt = self.cfg.dtype
    qkv = jnp.einsum("btd,dchk->cbthk", x_BxTxD, self.c_attn[...].astype(dt))
    if self.c_attn_bias is not None:
      qkv = qkv + self.c_attn_bias[...].astype(dt)[:, None, None]
    return qkv

  def project_out(self, y_BxTxHxK):
    """Output projection of the attended values back to the residual width."""
    dt = self.cfg.dtype
    out = jnp.einsum("bthk,hkd->btd", y_BxTxHxK, self.c_proj[...].astype(dt))
    if self.c_proj_bias is not None:
      out = out + self.c_proj_bias[...].astype(dt)
    return out


class MLP(nnx.Module):
  """Two-layer GELU feed-forward."""

  def __init__(self, cfg: BlockConfig, *, rngs: nnx.Rngs):
    d, f = cfg.n_embd, cfg.mlp_dim
    self.cfg = cfg
    self.c_fc = normal_param(rngs, (d, f), 0.02, cfg.param_dtype, ("embed", "mlp"))
    self.c_fc_bias = zeros_param((f,), cfg.param_dtype, ("mlp",)) if cfg.bias else None
    proj_std = 0.02 / (2 * cfg.n_layer) ** 0.5
    self.c_proj = normal_param(rngs, (f, d), proj_std, cfg.param_dtype, ("mlp", "embed"))
    self.c_proj_bias = zeros_param((d,), cfg.param_dtype, ("embed",)) if cfg.bias else None

  def __call__(self, x_BxTxD, *, dropout_key=None):
    dt = self.cfg.dtype
    h_BxTxF = x_BxTxD @ self.c_fc[...].astype(dt)
    if self.c_fc_bias is not None:
      h_BxTxF = h_BxTxF + self.c_fc_bias[...].astype(dt)
    h_BxTxF = jax.nn.gelu(h_BxTxF, approximate=True)
    out = h_BxTxF @ self.c_proj[...].astype(dt)
    if self.c_proj_bias is not None:
      out = out + self.c_proj_bias[...].astype(dt)
    return dropout(out, self.cfg.dropout, dropout_key)


class Block(nnx.Module):
  """Pre-LayerNorm block: x + attn(ln(x)); x + mlp(ln(x))."""

  def __init__(self, cfg: BlockConfig, *, rngs: nnx.Rngs):
    kw = dict(bias=cfg.bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    self.ln_1 = LayerNorm(cfg.n_embd, **kw)
    self.attn = Attention(cfg, rngs=rngs)
    self.ln_2 = LayerNorm(cfg.n_embd, **kw)
    self.mlp = MLP(cfg, rngs=rngs)

  def __call__(self, x_BxTxD, *, mask_BxTxS=None, cache=None, pos=None, dropout_key=None):
    k_attn, k_mlp = split_key(dropout_key, 2)
    a, new_cache = self.attn(
      self.ln_1(x_BxTxD), mask_BxTxS=mask_BxTxS, cache=cache, pos=pos, dropout_key=k_attn
    )
    x_BxTxD = x_BxTxD + a
    x_BxTxD = x_BxTxD + self.mlp(self.ln_2(x_BxTxD), dropout_key=k_mlp)
    return constrain(x_BxTxD, ("batch", None, None)), new_cache


REMAT_POLICIES = {
  "full": None,
  "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def padding_causal_mask(n: int, n_real_tokens: int, tokens_per_position: int):
  """[1, n, n] causal mask that also hides positions holding only padding."""
  valid_S = jnp.arange(n) * tokens_per_position < n_real_tokens
  causal_TxS = jnp.arange(n)[None, :] <= jnp.arange(n)[:, None]
  return (causal_TxS & valid_S[None, :])[None]
