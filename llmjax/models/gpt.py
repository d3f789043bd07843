"""GPT-2: pre-LayerNorm transformer, learned positions, tied embeddings, GPT-2 init.

The whole model is this file plus `layers.py`. `GPT(tokens_BxT) -> logits_BxTxV`;
`GPT.decode(tokens, cache, pos)` runs the same network with a KV cache.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from llmjax.models import layers, sections
from llmjax.util import errors

DTYPES = sections.DTYPES


def padded_vocab(vocab_size: int) -> int:
  """The embedding table's rows: the vocabulary rounded up to a multiple of 64."""
  return int(math.ceil(vocab_size / 64) * 64)


@dataclasses.dataclass(frozen=True)
class GPTBaseConfig:
  """The transformer stack's hyperparameters, shared by `gpt` and `progressive`. Each field
  is a key of the `model` config section; its comment is the key's help text."""

  vocab_size: int = 50257  # Tokenizer vocabulary; the embedding is padded to a multiple of 64.
  block_size: int = 256  # Context length in tokens.
  n_layer: int = 6  # Number of transformer blocks.
  n_head: int = 6  # Attention heads per block.
  n_embd: int = 384  # Residual stream width.
  dropout: float = 0.0  # Dropout rate on attention output, MLP output and embeddings.
  bias: bool = True  # Biases in linear layers and LayerNorms (GPT-2 style).
  mlp_hidden: int = 0  # MLP hidden width (HF n_inner); 0 = 4 * n_embd.
  dtype: Any = jnp.float32  # Compute dtype: float32 or bfloat16 (loss and softmax stay float32).
  param_dtype: Any = jnp.float32  # Parameter storage dtype: float32 or bfloat16.
  remat: str = "none"  # Rematerialisation per block: none, full or dots_saveable.
  attention: str = "auto"  # Attention kernel: auto (cuDNN on GPU), xla or cudnn.

  @classmethod
  def from_config(cls, model_cfg):
    """From a `model` config section; a key that is not a field is refused."""
    return sections.from_section(cls, model_cfg)

  @property
  def padded_vocab_size(self) -> int:
    return padded_vocab(self.vocab_size)

  def block_config(self) -> layers.BlockConfig:
    return layers.BlockConfig(
      n_embd=self.n_embd,
      n_head=self.n_head,
      n_layer=self.n_layer,
      mlp_hidden=self.mlp_hidden,
      dropout=self.dropout,
      bias=self.bias,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      attention=self.attention,
    )


@dataclasses.dataclass(frozen=True)
class GPTConfig(GPTBaseConfig):
  """`model.arch='gpt'`: GPT-2 (built from the `model` section of a config)."""

  ARCH: ClassVar[str] = "gpt"

  scan_layers: bool = False  # Apply the blocks with a scan: compile time flat in depth.
  init_from: str = "scratch"  # scratch, a hub id (gpt2, gpt2-xl, ...) or a local HF directory.


def tied_logits(x_BxTxD, wte_VxD, cfg: GPTBaseConfig):
  """Float32 logits `x @ wte.T` over the real vocabulary (padding rows dropped)."""
  logits = jnp.einsum("btd,vd->btv", x_BxTxD, wte_VxD.astype(cfg.dtype))
  logits = layers.constrain(logits, ("batch", None, "vocab"))
  return logits[..., : cfg.vocab_size].astype(jnp.float32)


def apply_blocks(
  blocks,
  x_BxTxD,
  *,
  scanned: bool,
  remat: str,
  cache=None,
  pos=None,
  dropout_key=None,
  mask_BxTxS=None,
):
  """Runs a stack of `layers.Block`s (an nnx.List, or one vmapped Block when scanned).

  `cache` (see `GPT.init_cache`) is a list of per-layer caches for the unrolled stack and
  one cache stacked over layers ({'k': LxNxKxS, 'v': LxNxSxK}) for the scanned one.
  Returns (x, cache).
  """
  n_layer = jax.tree.leaves(nnx.state(blocks))[0].shape[0] if scanned else len(blocks)
  keys = None if dropout_key is None else jax.random.split(dropout_key, n_layer)

  def run_one(graphdef, state, x, layer_cache, key):
    block = nnx.merge(graphdef, state)
    return block(x, mask_BxTxS=mask_BxTxS, cache=layer_cache, pos=pos, dropout_key=key)

  if remat != "none":
    run_one = jax.checkpoint(run_one, policy=layers.REMAT_POLICIES[remat], static_argnums=(0,))

  if scanned:
    graphdef, state = nnx.split(blocks)
    if cache is None:
      return jax.lax.scan(
        lambda x, xs: run_one(graphdef, xs[0], x, None, xs[1]), x_BxTxD, (state, keys)
      )

    # The stacked cache rides in the carry and each layer's slice is written back where it
    # lies (as scan outputs, the whole cache would be copied several times per token).
    def body(carry, xs):
      x, cache = carry
      layer_state, key, i = xs
      layer_cache = jax.tree.map(lambda c: c[i], cache)
      x, layer_cache = run_one(graphdef, layer_state, x, layer_cache, key)
      cache = jax.tree.map(
        lambda c, new: jax.lax.dynamic_update_index_in_dim(c, new, i, 0), cache, layer_cache
      )
      return (x, cache), None

    (x_BxTxD, cache), _ = jax.lax.scan(body, (x_BxTxD, cache), (state, keys, jnp.arange(n_layer)))
    return x_BxTxD, cache

  # Separate per-layer arrays: each is updated in place in a decode loop's carry (slicing
  # and re-stacking one [L, ...] array would copy the whole cache every token).
  new_caches = []
  for i, block in enumerate(blocks):
    graphdef, state = nnx.split(block)
    x_BxTxD, new_cache = run_one(
      graphdef,
      state,
      x_BxTxD,
      None if cache is None else cache[i],
      None if keys is None else keys[i],
    )
    new_caches.append(new_cache)
  return x_BxTxD, None if cache is None else new_caches


def make_blocks(cfg: layers.BlockConfig, n: int, scanned: bool, rngs: nnx.Rngs):
  if not scanned:
    return nnx.List([layers.Block(cfg, rngs=rngs) for _ in range(n)])

  @nnx.split_rngs(splits=n)
  @nnx.vmap(in_axes=(0,), out_axes=0)
  def make(r):
    return layers.Block(cfg, rngs=r)

  return make(rngs)


class GPT(nnx.Module):
  """GPT-2 language model."""

  def __init__(self, cfg: GPTConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    v, d = cfg.padded_vocab_size, cfg.n_embd
    self.wte = layers.normal_param(rngs, (v, d), 0.02, cfg.param_dtype, ("vocab", "embed"))
    self.wpe = layers.normal_param(
      rngs, (cfg.block_size, d), 0.01, cfg.param_dtype, (None, "embed")
    )
    self.h = make_blocks(cfg.block_config(), cfg.n_layer, cfg.scan_layers, rngs)
    self.ln_f = layers.LayerNorm(d, bias=cfg.bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype)

  def hidden(self, tokens_BxT, *, cache=None, pos=0, dropout_key=None):
    """Final normalised hidden states (before the unembedding) and the new cache."""
    cfg = self.cfg
    t = tokens_BxT.shape[1]
    if not isinstance(pos, jax.Array) and pos + t > cfg.block_size:
      raise errors.SamplingError(
        f"Sequence of {pos + t} tokens exceeds model.block_size="
        f"{cfg.block_size}; crop the input or raise block_size."
      )
    k_emb, k_blocks = layers.split_key(dropout_key, 2)
    x = self.wte[...][tokens_BxT].astype(cfg.dtype)
    positions = jax.lax.dynamic_slice_in_dim(self.wpe[...], pos, t, axis=0)
    x = layers.dropout(x + positions.astype(cfg.dtype)[None], cfg.dropout, k_emb)
    x = layers.constrain(x, ("batch", None, None))
    x, cache = apply_blocks(
      self.layer_blocks(),
      x,
      scanned=cfg.scan_layers,
      remat=cfg.remat,
      cache=cache,
      pos=pos,
      dropout_key=k_blocks,
    )
    return self.ln_f(x), cache

  def layer_blocks(self):
    """The blocks applied in order (subclasses may repeat blocks, e.g. progressive.py)."""
    return self.h

  def unembed(self, x_BxTxD):
    """Tied output projection; float32 logits over the real (unpadded) vocabulary."""
    return tied_logits(x_BxTxD, self.wte[...], self.cfg)

  def output_head(self):
    """(table, vocab_size, dtype): `unembed(x)` is `x @ table[:vocab_size].T` in `dtype`
    (what `llmjax.train.step.linear_cross_entropy` computes without storing logits)."""
    return self.wte[...], self.cfg.vocab_size, self.cfg.dtype

  def __call__(self, tokens_BxT, *, dropout_key=None):
    x, _ = self.hidden(tokens_BxT, dropout_key=dropout_key)
    return self.unembed(x)

  def init_cache(self, batch: int, length: int | None = None, dtype=None):
    """An empty KV cache (layouts: `layers.Attention.attend_cached`): a list of per-layer
    `layers.empty_kv_cache`, or one such dict stacked over layers when scanned."""
    cfg = self.cfg
    h, k, s = cfg.n_head, cfg.n_embd // cfg.n_head, length or cfg.block_size
    dtype = dtype or cfg.dtype
    if cfg.scan_layers:
      return layers.empty_kv_cache(batch, h, k, s, dtype, leading=(cfg.n_layer,))
    return [layers.empty_kv_cache(batch, h, k, s, dtype) for _ in range(cfg.n_layer)]

  def decode(self, tokens_BxT, cache, pos):
    """Runs tokens at positions pos.. against the cache; returns (logits_BxTxV, cache)."""
    x, cache = self.hidden(tokens_BxT, cache=cache, pos=pos)
    return self.unembed(x), cache

  def decode_last(self, tokens_BxT, cache, pos, index):
    """`decode`, but only the logits of position `index` ([B, V]): a prompt's prefill
    projects one position onto the vocabulary instead of all of them."""
    x, cache = self.hidden(tokens_BxT, cache=cache, pos=pos)
    return self.unembed(jnp.take(x, index, axis=1)[:, None])[:, 0], cache
