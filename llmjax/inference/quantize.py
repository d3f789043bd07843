"""Int8 inference for GPT: int8 weights with per-output-channel scales, int8 activations.

`quantize_model(model)` returns a GPT whose every matrix (the QKV, attention-output and two
MLP weights of each block, and the tied embedding / output table) is stored as int8 with one
float32 scale per output channel (`scale = max |w| / 127` over the channel's inputs, `q =
round(w / scale)`). A product `x @ w` becomes

    x_q, x_scale = round(x / s), s   with s = max |x| / 127 per row (per token)
    y = int32(x_q @ q) * x_scale * scale   (+ bias)

an int8 x int8 dot accumulated exactly in int32 (`quantized_matmul`). LayerNorms, biases,
positions, attention and the KV cache stay float32. The table's per-row scale serves both
the embedding lookup (a row of `q` times its scale) and the output projection.

Why int8 x int8 and not int8 weights times float32 activations: XLA:CPU has no mixed-type
dot; for `x @ q.astype(f32)` (or `preferred_element_type=f32`) it materialises a float32
copy of the whole weight every call, and int8 x int8 with one row is turned into an int32
dot over an int32 copy; both read more bytes than the float32 model. An int8 x int8 dot
with two or more rows is handed to the YNNPACK library as it is, reading one byte per
weight, so a single row is padded to two (the second row's result is dropped).
docs/performance.md ("Decoding in int8") has the measurements and the compiled HLO.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from llmjax import models
from llmjax.models import gpt, layers
from llmjax.util import errors


class QuantizedWeight(nnx.Variable):
  """An int8 weight or its float32 scales: inference state, never trained."""


def quantize_weight(w_IxO):
  """Symmetric int8 with one scale per output channel (the last axis): returns (q_IxO int8,
  scale_O float32) with `q * scale ~= w`; an all-zero channel gets scale 1."""
  w = w_IxO.astype(jnp.float32)
  amax_O = jnp.max(jnp.abs(w), axis=0)
  scale_O = jnp.where(amax_O > 0, amax_O / 127.0, 1.0)
  q = jnp.clip(jnp.round(w / scale_O), -127, 127).astype(jnp.int8)
  return q, scale_O


def quantize_rows(x_MxI):
  """Per-row symmetric int8 of activations: (x_q int8, scale_Mx1 float32); a zero row
  gets scale 1."""
  amax = jnp.max(jnp.abs(x_MxI), axis=-1, keepdims=True)
  scale = jnp.where(amax > 0, amax / 127.0, 1.0)
  return jnp.round(x_MxI / scale).astype(jnp.int8), scale


def quantized_matmul(x_xI, q_IxO, scale_O, *, transposed: bool = False):
  """`x @ (q * scale)` over the last axis of x (leading axes kept), float32 result, as an
  int8 x int8 dot with int32 accumulation. `transposed`: q is [O, I] (the embedding table
  used as the output projection) and the scale runs over its rows."""
  lead, n_in = x_xI.shape[:-1], x_xI.shape[-1]
  x_MxI = x_xI.reshape(-1, n_in).astype(jnp.float32)
  m = x_MxI.shape[0]
  if m == 1:  # A one-row int8 dot is not given to YNNPACK (see the module docstring).
    x_MxI = jnp.concatenate([x_MxI, x_MxI], axis=0)
  xq_MxI, xs_Mx1 = quantize_rows(x_MxI)
  contract = 1 if transposed else 0
  acc_MxO = jax.lax.dot_general(
    xq_MxI, q_IxO, (((1,), (contract,)), ((), ())), preferred_element_type=jnp.int32
  )
  y_MxO = acc_MxO.astype(jnp.float32) * xs_Mx1 * scale_O
  return y_MxO[:m].reshape(*lead, y_MxO.shape[-1])


def _param(x):
  return nnx.Param(jnp.asarray(x))


def _weight(x):
  return QuantizedWeight(jnp.asarray(x))


class QuantizedAttention(layers.Attention):
  """`layers.Attention` with int8 QKV and output projections (cached and uncached paths)."""

  def __init__(self, attn: layers.Attention):
    cfg = attn.cfg
    d, h, k = cfg.n_embd, cfg.n_head, cfg.head_dim
    self.cfg = cfg
    q, s = quantize_weight(attn.c_attn[...].reshape(d, 3 * h * k))
    self.c_attn_q, self.c_attn_scale = _weight(q), _weight(s)
    q, s = quantize_weight(attn.c_proj[...].reshape(h * k, d))
    self.c_proj_q, self.c_proj_scale = _weight(q), _weight(s)
    bias = attn.c_attn_bias is not None
    self.c_attn_bias = _param(attn.c_attn_bias[...]) if bias else None
    self.c_proj_bias = _param(attn.c_proj_bias[...]) if attn.c_proj_bias is not None else None

  def project_qkv(self, x_BxTxD):
    b, t = x_BxTxD.shape[:2]
    qkv = quantized_matmul(x_BxTxD, self.c_attn_q[...], self.c_attn_scale[...])
    qkv_BxTx3xHxK = qkv.reshape(b, t, 3, self.cfg.n_head, self.cfg.head_dim)
    if self.c_attn_bias is not None:
      qkv_BxTx3xHxK = qkv_BxTx3xHxK + self.c_attn_bias[...]
    return jnp.moveaxis(qkv_BxTx3xHxK, 2, 0).astype(self.cfg.dtype)

  def decode_qkv(self, x_BxTxD):
    return self.project_qkv(x_BxTxD)

  def project_out(self, y_BxTxHxK):
    b, t = y_BxTxHxK.shape[:2]
    out = quantized_matmul(y_BxTxHxK.reshape(b, t, -1), self.c_proj_q[...], self.c_proj_scale[...])
    if self.c_proj_bias is not None:
      out = out + self.c_proj_bias[...]
    return out.astype(self.cfg.dtype)


class QuantizedMLP(layers.MLP):
  """`layers.MLP` with int8 weights."""

  def __init__(self, mlp: layers.MLP):
    self.cfg = mlp.cfg
    q, s = quantize_weight(mlp.c_fc[...])
    self.c_fc_q, self.c_fc_scale = _weight(q), _weight(s)
    q, s = quantize_weight(mlp.c_proj[...])
    self.c_proj_q, self.c_proj_scale = _weight(q), _weight(s)
    self.c_fc_bias = _param(mlp.c_fc_bias[...]) if mlp.c_fc_bias is not None else None
    self.c_proj_bias = _param(mlp.c_proj_bias[...]) if mlp.c_proj_bias is not None else None

  def __call__(self, x_BxTxD, *, dropout_key=None):
    h_BxTxF = quantized_matmul(x_BxTxD, self.c_fc_q[...], self.c_fc_scale[...])
    if self.c_fc_bias is not None:
      h_BxTxF = h_BxTxF + self.c_fc_bias[...]
    h_BxTxF = jax.nn.gelu(h_BxTxF, approximate=True)
    out = quantized_matmul(h_BxTxF, self.c_proj_q[...], self.c_proj_scale[...])
    if self.c_proj_bias is not None:
      out = out + self.c_proj_bias[...]
    return layers.dropout(out.astype(self.cfg.dtype), self.cfg.dropout, dropout_key)


class QuantizedBlock(layers.Block):
  """`layers.Block` (same `__call__`) over a quantized attention and MLP."""

  def __init__(self, block: layers.Block):
    self.ln_1 = nnx.clone(block.ln_1)
    self.attn = QuantizedAttention(block.attn)
    self.ln_2 = nnx.clone(block.ln_2)
    self.mlp = QuantizedMLP(block.mlp)


class QuantizedGPT(gpt.GPT):
  """`gpt.GPT` with int8 matrices; `decode`, `decode_last`, `init_cache` and the full
  forward are GPT's own. Built by `quantize_model`; the layers are always unrolled."""

  def __init__(self, model: gpt.GPT):
    self.cfg = dataclasses.replace(model.cfg, scan_layers=False, remat="none")
    q, s = quantize_weight(model.wte[...].T)  # Per row of the [V, D] table.
    self.wte_q, self.wte_scale = _weight(q.T), _weight(s)
    self.wpe = nnx.clone(model.wpe)
    self.h = nnx.List([QuantizedBlock(b) for b in model.h])
    self.ln_f = nnx.clone(model.ln_f)

  def hidden(self, tokens_BxT, *, cache=None, pos=0, dropout_key=None):
    cfg = self.cfg
    t = tokens_BxT.shape[1]
    if not isinstance(pos, jax.Array) and pos + t > cfg.block_size:
      raise errors.SamplingError(
        f"Sequence of {pos + t} tokens exceeds model.block_size="
        f"{cfg.block_size}; crop the input or raise block_size."
      )
    rows = self.wte_q[...][tokens_BxT].astype(jnp.float32)
    x = rows * self.wte_scale[...][tokens_BxT][..., None]
    positions = jax.lax.dynamic_slice_in_dim(self.wpe[...], pos, t, axis=0)
    x = (x + positions[None]).astype(cfg.dtype)
    x, cache = gpt.apply_blocks(self.h, x, scanned=False, remat="none", cache=cache, pos=pos)
    return self.ln_f(x), cache

  def unembed(self, x_BxTxD):
    logits = quantized_matmul(x_BxTxD, self.wte_q[...], self.wte_scale[...], transposed=True)
    return logits[..., : self.cfg.vocab_size]

  def output_head(self):
    raise errors.SamplingError("An int8 model is for inference; train the float32 model.")


def unrolled(model: gpt.GPT) -> gpt.GPT:
  """`model` with its layer stack unrolled (a list of blocks); a model already unrolled
  is returned as it is."""
  if not model.cfg.scan_layers:
    return model
  cfg = dataclasses.replace(model.cfg, scan_layers=False)
  abstract = nnx.eval_shape(lambda: models.build(cfg, 0))
  graphdef, state = nnx.split(abstract)
  pure = nnx.to_pure_dict(nnx.state(model))
  n = cfg.n_layer
  pure["h"] = {i: jax.tree.map(lambda a, i=i: a[i], pure["h"]) for i in range(n)}
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)


def check_quantizable(model) -> None:
  """A SamplingError unless `model` is a plain `gpt.GPT` (no adapters, no other arch)."""
  ok = type(model) is gpt.GPT
  if ok:
    blocks = [model.h] if model.cfg.scan_layers else list(model.h)
    ok = all(
      type(b) is layers.Block and type(b.attn) is layers.Attention and type(b.mlp) is layers.MLP
      for b in blocks
    )
  if not ok:
    raise errors.SamplingError(
      f"dtype='int8' supports plain GPT models (llmjax.models.gpt.GPT); this model is a "
      f"{type(model).__name__}: sample it with dtype='float32' or 'bfloat16'."
    )
  if jnp.dtype(model.cfg.dtype) != jnp.float32:
    raise errors.SamplingError(
      f"dtype='int8' quantizes a float32 model; this one computes in {model.cfg.dtype}."
    )


def quantize_model(model: gpt.GPT) -> QuantizedGPT:
  """The int8 inference copy of a float32 GPT (the argument is left as it is)."""
  check_quantizable(model)
  return QuantizedGPT(unrolled(model))
