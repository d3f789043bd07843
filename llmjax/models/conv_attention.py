"""Convolution-attention model: a causal compressor/expander (U-Net) of transformer blocks.

Layout for 3 levels (T = block size, D = `n_embd`, f = `fan_in`):

  embed (D, T); block; compress -> (2D, T/f); block x2; compress -> (4D, T/f^2); block x2;
  compress -> (8D, T/f^3); block x2; expand -> (4D, T/f^2); block x2; expand -> (2D, T/f);
  block x2; expand -> (D, T); block; unembed

"block" is `layers.Block` (causal attention + feed-forward) at that level's width and length.
A compression is a strided convolution: group g of f consecutive positions becomes one
position of twice the width. An expansion maps each coarse position back to f fine ones
and adds them to the stream saved before the matching compression (a U-Net skip).

Causality. Coarse position g summarises fine positions f*g .. f*g + f - 1, so it is known
only once the whole group is. On the way out each expansion therefore shifts the coarse
sequence right by one group: fine position t receives the summary of the groups that ended
before t's own group began (group t//f - 1 and earlier), never of its own group. Its own
and earlier tokens of the current group arrive through the skip stream, which is causal by
construction (causal attention, per-position feed-forward). `tests/conv_attention_test.py`
checks this with gradients: d logits[t] / d embedding[s] is exactly zero for every s > t.

Inputs shorter than a multiple of f^3 are right-padded with token 0 and the padded keys are
masked out of attention; the model being causal, real positions never see the padding.
`decode` (for `llmjax.inference.generate.Generator`) is incremental: a KV cache per block and the
streams of every level are kept, so a new token costs one step of the finest level's blocks,
plus one step at level L only when it completes a group of fan_in**L tokens (a coarse
position is never recomputed before its group is complete, so it is computed exactly once).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from llmjax.models import gpt, layers, sections
from llmjax.util import errors


@dataclasses.dataclass(frozen=True)
class ConvAttentionConfig:
  """`model.arch='conv_attention'` (built from the `model` section of a config). Each field
  is a key of that section; its comment is the key's help text."""

  ARCH: ClassVar[str] = "conv_attention"

  vocab_size: int = 50257  # Tokenizer vocabulary; the embedding is padded to a multiple of 64.
  block_size: int = 256  # Context length in tokens; a multiple of fan_in**n_levels.
  n_head: int = 6  # Attention heads in every block (the head size grows with the width).
  n_embd: int = 384  # Width D at full length (2D, 4D, ... after each compression).
  fan_in: int = 4  # Positions merged per compression step.
  n_levels: int = 3  # Compressions (and expansions); the model has 4 * n_levels blocks.
  dropout: float = 0.0  # Dropout rate on attention output, MLP output and embeddings.
  bias: bool = True  # Biases in linear layers, convolutions and LayerNorms.
  dtype: Any = jnp.float32  # Compute dtype: float32 or bfloat16 (loss and softmax stay float32).
  param_dtype: Any = jnp.float32  # Parameter storage dtype: float32 or bfloat16.
  attention: str = "auto"  # Attention kernel: auto (cuDNN on GPU), xla or cudnn.
  target_offset: int = 1  # Predict the token this many positions ahead (1 = next token).

  def __post_init__(self):
    unit = self.fan_in**self.n_levels
    if self.fan_in < 2:
      raise errors.ConfigError(f"model.fan_in={self.fan_in} must be >= 2.")
    if self.n_levels < 1:
      raise errors.ConfigError(f"model.n_levels={self.n_levels} must be >= 1.")
    if self.block_size % unit:
      raise errors.ConfigError(
        f"model.block_size={self.block_size} must be a multiple of "
        f"fan_in**{self.n_levels} = {unit} for arch conv_attention; use e.g. "
        f"--config.model.block_size={max(unit, self.block_size // unit * unit)}."
      )
    if self.n_embd % self.n_head:
      raise errors.ConfigError(
        f"model.n_embd={self.n_embd} must be divisible by model.n_head={self.n_head}."
      )
    if self.target_offset < 1:
      raise errors.ConfigError(f"model.target_offset={self.target_offset} must be >= 1.")

  @classmethod
  def from_config(cls, model_cfg) -> ConvAttentionConfig:
    """From a `model` config section; a key that is not a field is refused."""
    return sections.from_section(cls, model_cfg)

  @property
  def padded_vocab_size(self) -> int:
    return gpt.padded_vocab(self.vocab_size)

  @property
  def n_blocks(self) -> int:
    return 4 * self.n_levels

  def block_config(self, level: int) -> layers.BlockConfig:
    return layers.BlockConfig(
      n_embd=self.n_embd * 2**level,
      n_head=self.n_head,
      n_layer=self.n_blocks,
      dropout=self.dropout,
      bias=self.bias,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      attention=self.attention,
    )

  def plan(self) -> tuple[tuple[str, int, int], ...]:
    """The layout as (op, index, level after the op); op is block, compress or expand."""
    ops, level, n_block = [], 0, 0

    def block():
      nonlocal n_block
      ops.append(("block", n_block, level))
      n_block += 1

    block()
    for i in range(self.n_levels):
      level += 1
      ops.append(("compress", i, level))
      block()
      block()
    for i in range(self.n_levels):
      level -= 1
      ops.append(("expand", i, level))
      block()
      if level:
        block()
    return tuple(ops)


class Compress(nnx.Module):
  """Strided convolution: each group of `fan_in` positions -> one position of 2x the width."""

  def __init__(self, dim: int, fan_in: int, cfg: ConvAttentionConfig, *, rngs: nnx.Rngs):
    self.fan_in, self.dtype = fan_in, cfg.dtype
    self.ln = layers.LayerNorm(dim, bias=cfg.bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    std = 0.02 / math.sqrt(fan_in)
    self.kernel = layers.normal_param(
      rngs, (fan_in, dim, 2 * dim), std, cfg.param_dtype, (None, "embed", "mlp")
    )
    self.bias = layers.zeros_param((2 * dim,), cfg.param_dtype, ("mlp",)) if cfg.bias else None

  def __call__(self, x_BxTxD):
    b, t, d = x_BxTxD.shape
    x_BxGxFxD = self.ln(x_BxTxD).reshape(b, t // self.fan_in, self.fan_in, d)
    y_BxGxE = jnp.einsum("bgfd,fde->bge", x_BxGxFxD, self.kernel[...].astype(self.dtype))
    if self.bias is not None:
      y_BxGxE = y_BxGxE + self.bias[...].astype(self.dtype)
    return y_BxGxE


class Expand(nnx.Module):
  """Transposed convolution back to `fan_in` positions of half the width, shifted one group
  to the right (causality), added to the skip stream of the finer level."""

  def __init__(self, dim: int, fan_in: int, cfg: ConvAttentionConfig, *, rngs: nnx.Rngs):
    self.fan_in, self.dtype = fan_in, cfg.dtype
    self.ln = layers.LayerNorm(dim, bias=cfg.bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    std = 0.02 / math.sqrt(2 * cfg.n_blocks)
    self.kernel = layers.normal_param(
      rngs, (dim, fan_in, dim // 2), std, cfg.param_dtype, ("mlp", None, "embed")
    )
    self.bias = (
      layers.zeros_param((fan_in, dim // 2), cfg.param_dtype, (None, "embed")) if cfg.bias else None
    )

  def __call__(self, y_BxGxE, skip_BxTxD):
    b, g, _ = y_BxGxE.shape
    y_BxGxE = self.ln(y_BxGxE)
    # Fine positions of group g may only use groups that ended before g began.
    y_BxGxE = jnp.pad(y_BxGxE, ((0, 0), (1, 0), (0, 0)))[:, :g]
    x_BxGxFxD = jnp.einsum("bge,efd->bgfd", y_BxGxE, self.kernel[...].astype(self.dtype))
    if self.bias is not None:
      x_BxGxFxD = x_BxGxFxD + self.bias[...].astype(self.dtype)
    return skip_BxTxD + x_BxGxFxD.reshape(b, g * self.fan_in, -1)


class ConvAttention(nnx.Module):
  """Compressor/expander language model: `module(tokens_BxT) -> logits_BxTxV`."""

  def __init__(self, cfg: ConvAttentionConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    v, d = cfg.padded_vocab_size, cfg.n_embd
    self.wte = layers.normal_param(rngs, (v, d), 0.02, cfg.param_dtype, ("vocab", "embed"))
    self.wpe = layers.normal_param(
      rngs, (cfg.block_size, d), 0.01, cfg.param_dtype, (None, "embed")
    )
    blocks, compress, expand = [], [], []
    for op, _, level in cfg.plan():
      if op == "block":
        blocks.append(layers.Block(cfg.block_config(level), rngs=rngs))
      elif op == "compress":
        compress.append(Compress(d * 2 ** (level - 1), cfg.fan_in, cfg, rngs=rngs))
      else:
        expand.append(Expand(d * 2 ** (level + 1), cfg.fan_in, cfg, rngs=rngs))
    self.blocks = nnx.List(blocks)
    self.compress = nnx.List(compress)
    self.expand = nnx.List(expand)
    self.ln_f = layers.LayerNorm(d, bias=cfg.bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype)

  def padded_length(self, t: int) -> int:
    unit = self.cfg.fan_in**self.cfg.n_levels
    return -(-t // unit) * unit

  def hidden(self, tokens_BxT, *, dropout_key=None, trace: list | None = None):
    """Final normalised hidden states [B, T, D]; `trace` (a list) collects (op, shape)."""
    t = tokens_BxT.shape[1]
    if t > self.cfg.block_size:
      raise errors.SamplingError(
        f"Sequence of {t} tokens exceeds model.block_size="
        f"{self.cfg.block_size}; crop the input or raise block_size."
      )
    t_pad = self.padded_length(t)
    tokens_BxT = jnp.pad(tokens_BxT, ((0, 0), (0, t_pad - t)))
    keys = layers.split_key(dropout_key, 2)
    x_BxTxD = layers.dropout(self.embed(tokens_BxT), self.cfg.dropout, keys[0])
    return self.body(x_BxTxD, n_real=t, dropout_key=keys[1], trace=trace)

  def embed(self, tokens_BxT):
    t = tokens_BxT.shape[1]
    return (self.wte[...][tokens_BxT] + self.wpe[...][:t]).astype(self.cfg.dtype)

  def body(self, x_BxTxD, *, n_real: int | None = None, dropout_key=None, trace=None):
    """The blocks, compressions and expansions on embedded inputs x (length a multiple of
    fan_in**n_levels, of which the first `n_real` positions are real; the rest is padding
    and masked). Returns the final normalised hidden states of the real positions."""
    cfg = self.cfg
    t_pad = x_BxTxD.shape[1]
    n_real = t_pad if n_real is None else n_real
    masks = None
    if n_real != t_pad:
      masks = [
        layers.padding_causal_mask(t_pad // cfg.fan_in**level, n_real, cfg.fan_in**level)
        for level in range(cfg.n_levels + 1)
      ]
    keys = layers.split_key(dropout_key, cfg.n_blocks)
    x = x_BxTxD
    _record(trace, "embed", x)
    skips = []
    for op, index, level in cfg.plan():
      if op == "block":
        mask = None if masks is None else masks[level]
        x, _ = self.blocks[index](x, mask_BxTxS=mask, dropout_key=keys[index])
      elif op == "compress":
        skips.append(x)
        x = self.compress[index](x)
      else:
        x = self.expand[index](x, skips.pop())
      _record(trace, op, x)
    return self.ln_f(x[:, :n_real])

  def unembed(self, x_BxTxD):
    logits = jnp.einsum("btd,vd->btv", x_BxTxD, self.wte[...].astype(self.cfg.dtype))
    return logits[..., : self.cfg.vocab_size].astype(jnp.float32)

  def __call__(self, tokens_BxT, *, dropout_key=None):
    return self.unembed(self.hidden(tokens_BxT, dropout_key=dropout_key))

  def init_cache(self, batch: int, length: int | None = None, dtype=None):
    """The decode cache, one entry per level L (length T/f^L, width D*2^L):
    'kv': per block, its `layers.empty_kv_cache`;
    'down': per level below the top, the stream after its down blocks (what the next
    compression reads and the matching expansion adds to); 'up': per level above the
    finest, its output (top: after its blocks; others: after their up blocks), which the
    expansion into the level below reads."""
    del length
    cfg = self.cfg
    dtype = dtype or cfg.dtype

    def stream(level):
      return jnp.zeros((batch, cfg.block_size // cfg.fan_in**level, cfg.n_embd * 2**level), dtype)

    kv = []
    for op, _, level in cfg.plan():
      if op == "block":
        s, d = cfg.block_size // cfg.fan_in**level, cfg.n_embd * 2**level
        h, k = cfg.n_head, d // cfg.n_head
        kv.append(layers.empty_kv_cache(batch, h, k, s, dtype))
    return {
      "kv": kv,
      "down": [stream(lv) for lv in range(cfg.n_levels)],
      "up": [stream(lv) for lv in range(1, cfg.n_levels + 1)],
    }

  def decode(self, tokens_BxT, cache, pos):
    """Runs tokens at positions pos.. against the cache; returns (logits_BxTxV, cache).

    pos == 0 (a prompt's prefill): one forward over the whole window that fills every
    level's cache. Otherwise one token at a time (`decode_step`): a new token costs one
    block step per finest-level block, plus one step at level L only when it completes a
    group of f^L tokens. Cache entries past the last written position hold whatever the
    prefill's zero padding produced; each is rewritten before anything reads it."""
    if isinstance(pos, int) and pos == 0:
      return self.prefill(tokens_BxT, cache)
    if tokens_BxT.shape[1] == 1:
      return self.decode_step(tokens_BxT, cache, pos)

    def step(i, carry):
      cache, logits_BxTxV = carry
      token_Bx1 = jax.lax.dynamic_slice_in_dim(tokens_BxT, i, 1, axis=1)
      logits_Bx1xV, cache = self.decode_step(token_Bx1, cache, pos + i)
      return cache, jax.lax.dynamic_update_slice_in_dim(logits_BxTxV, logits_Bx1xV, i, axis=1)

    b, t = tokens_BxT.shape
    logits = jnp.zeros((b, t, self.cfg.vocab_size), jnp.float32)
    cache, logits = jax.lax.fori_loop(0, t, step, (cache, logits))
    return logits, cache

  def prefill(self, tokens_BxT, cache):
    """`body` over the whole (zero-padded) window, every block through its cache at
    position 0, keeping the streams the incremental steps read."""
    cfg = self.cfg
    t = tokens_BxT.shape[1]
    if t > cfg.block_size:
      raise ValueError(
        f"Sequence of {t} tokens exceeds model.block_size="
        f"{cfg.block_size}; crop the input or raise block_size."
      )
    window_BxT = jnp.pad(tokens_BxT.astype(jnp.int32), ((0, 0), (0, cfg.block_size - t)))
    x = self.embed(window_BxT)
    kv, down, up = list(cache["kv"]), list(cache["down"]), list(cache["up"])
    skips = []
    for op, index, level in cfg.plan():
      if op == "block":
        x, kv[index] = self.blocks[index](x, cache=kv[index], pos=0)
      elif op == "compress":
        down[level - 1] = x.astype(down[level - 1].dtype)
        skips.append(x)
        x = self.compress[index](x)
      else:
        up[level] = x.astype(up[level].dtype)
        x = self.expand[index](x, skips.pop())
    logits = self.unembed(self.ln_f(x[:, :t]))
    return logits, {"kv": kv, "down": down, "up": up}

  def decode_step(self, token_Bx1, cache, pos):
    """One new token at (traced) position pos; see `decode`."""
    cfg = self.cfg
    f = cfg.fan_in
    kv, down, up = list(cache["kv"]), list(cache["down"]), list(cache["up"])
    down_blocks, up_blocks = self.level_blocks()
    x = (
      self.wte[...][token_Bx1] + jax.lax.dynamic_slice_in_dim(self.wpe[...], pos, 1, axis=0)[None]
    ).astype(cfg.dtype)
    for index in down_blocks[0]:
      x, kv[index] = self.blocks[index](x, cache=kv[index], pos=pos)
    down[0] = _write(down[0], x, pos)
    fine_x = x

    # Down the levels: level L gets a new position when pos completes a group of f^L.
    for level in range(1, cfg.n_levels + 1):

      def compress_into(state, level=level):
        kv, down, up = state
        p = (pos + 1) // f**level - 1
        group_BxFxD = jax.lax.dynamic_slice_in_dim(down[level - 1], p * f, f, axis=1)
        y = self.compress[level - 1](group_BxFxD)
        for index in down_blocks[level]:
          y, kv[index] = self.blocks[index](y, cache=kv[index], pos=p)
        if level < cfg.n_levels:
          down[level] = _write(down[level], y, p)
        else:
          up[level - 1] = _write(up[level - 1], y, p)
        return kv, down, up

      kv, down, up = jax.lax.cond(
        (pos + 1) % f**level == 0, compress_into, lambda state: state, (kv, down, up)
      )

    # Up the levels: the new position of level L (below the top) adds the expansion of
    # the previous group's summary one level up, then runs its up blocks.
    for level in range(cfg.n_levels - 1, 0, -1):

      def expand_into(state, level=level):
        kv, up = state
        p = (pos + 1) // f**level - 1
        skip_Bx1xD = jax.lax.dynamic_slice_in_dim(down[level], p, 1, axis=1)
        y = self.expand_one(level, up[level], p, skip_Bx1xD)
        for index in up_blocks[level]:
          y, kv[index] = self.blocks[index](y, cache=kv[index], pos=p)
        up[level - 1] = _write(up[level - 1], y, p)
        return kv, up

      kv, up = jax.lax.cond((pos + 1) % f**level == 0, expand_into, lambda state: state, (kv, up))

    x = self.expand_one(0, up[0], pos, fine_x)
    for index in up_blocks[0]:
      x, kv[index] = self.blocks[index](x, cache=kv[index], pos=pos)
    return self.unembed(self.ln_f(x)), {"kv": kv, "down": down, "up": up}

  def expand_one(self, level, coarse_BxGxE, p, skip_Bx1xD):
    """Position p of `level` after the expansion from level + 1: its skip stream plus the
    expansion of coarse group p // f - 1 (none for the first group), as `Expand` does."""
    f = self.cfg.fan_in
    module = self.expand[self.cfg.n_levels - 1 - level]
    g = p // f
    y_Bx1xE = module.ln(
      jax.lax.dynamic_slice_in_dim(coarse_BxGxE, jnp.maximum(g - 1, 0), 1, axis=1)
    )
    y_Bx1xE = jnp.where(g > 0, y_Bx1xE, jnp.zeros_like(y_Bx1xE))
    kernel_ExD = jax.lax.dynamic_index_in_dim(module.kernel[...], p % f, axis=1, keepdims=False)
    x_Bx1xD = jnp.einsum("bge,ed->bgd", y_Bx1xE, kernel_ExD.astype(module.dtype))
    if module.bias is not None:
      x_Bx1xD = x_Bx1xD + jax.lax.dynamic_index_in_dim(
        module.bias[...], p % f, axis=0, keepdims=False
      ).astype(module.dtype)
    return skip_Bx1xD + x_Bx1xD

  def level_blocks(self):
    """(down, up): per level, the indices of its blocks before the compression out of it
    (the top level's blocks count as down) and after the expansion into it."""
    n = self.cfg.n_levels
    down, up = [[] for _ in range(n + 1)], [[] for _ in range(n + 1)]
    expanding = False
    for op, index, level in self.cfg.plan():
      if op == "expand":
        expanding = True
      elif op == "block":
        (up if expanding else down)[level].append(index)
    return down, up


def _write(stream_BxTxD, x_Bx1xD, p):
  return jax.lax.dynamic_update_slice_in_dim(
    stream_BxTxD, x_Bx1xD.astype(stream_BxTxD.dtype), p, axis=1
  )


def _record(trace, op, x):
  if trace is not None:
    trace.append((op, tuple(x.shape)))
