"""Autoregressive decoding with a KV cache, compiled once per (batch, prompt bucket).

A prompt is right-padded to a power-of-two bucket and run through one jitted prefill;
then a jitted `lax.while_loop` produces the new tokens one cached step at a time (the
number of steps is a traced value, so it never triggers a recompilation). Generations
longer than the context continue in segments: the last half-context is re-prefilled.
`inference_model` prepares a model for decoding in bfloat16 / float16 (cast) or int8
(`quantize.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llmjax import models
from llmjax.inference import quantize
from llmjax.util import errors


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  temperature: float = 1.0  # 0 = greedy.
  top_k: int = 0  # 0 = off.
  top_p: float = 1.0  # 1 = off.

  def __post_init__(self):
    if self.temperature < 0:
      raise errors.SamplingError(f"temperature={self.temperature} must be >= 0 (0 = greedy).")
    if self.top_k < 0:
      raise errors.SamplingError(f"top_k={self.top_k} must be >= 0 (0 = off).")
    if not 0.0 < self.top_p <= 1.0:
      raise errors.SamplingError(f"top_p={self.top_p} must be in (0, 1] (1 = off).")


def largest_threshold(lg_BxV, keeps_enough, iters: int = 40):
  """Per row, the largest value t with `keeps_enough(lg >= t)` true, found by bisection.

  Cutting the vocabulary at a threshold needs no sort: each of the `iters` steps is one
  vectorised comparison over the vocabulary, far cheaper than sorting it per token.
  """
  lo = jnp.min(lg_BxV, axis=-1)  # Keeping everything always qualifies.
  hi = jnp.max(lg_BxV, axis=-1) + 1.0

  def step(_, bounds):
    lo, hi = bounds
    mid = (lo + hi) / 2
    ok = keeps_enough(lg_BxV >= mid[:, None])
    return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

  lo, _ = jax.lax.fori_loop(0, iters, step, (lo, hi))
  return lo


def greedy_token(logits_BxV):
  """`jnp.argmax` over the last axis, as int32 (the first NaN, if any, else the first
  maximum), computed as a max and then the first index holding it: two plain reductions,
  which XLA:CPU runs about 2.5x faster than its index-and-value argmax reduction (a
  quarter of a millisecond per token at a 50k vocabulary)."""
  top_Bx1 = jnp.max(logits_BxV, axis=-1, keepdims=True)
  hit_BxV = (logits_BxV == top_Bx1) | jnp.isnan(logits_BxV)
  index_V = jnp.arange(logits_BxV.shape[-1], dtype=jnp.int32)
  return jnp.min(jnp.where(hit_BxV, index_V, logits_BxV.shape[-1]), axis=-1)


def sample_token(logits_BxV, key, temperature, top_k, top_p):
  """Samples one token per row; all three controls are traced values."""
  logits = logits_BxV.astype(jnp.float32)

  def apply_top_k(lg):
    kth = largest_threshold(lg, lambda kept: kept.sum(-1) >= top_k)
    return jnp.where(lg < kth[:, None], -jnp.inf, lg)

  def apply_top_p(lg):
    probs = jax.nn.softmax(lg / jnp.maximum(temperature, 1e-6), axis=-1)
    cutoff = largest_threshold(lg, lambda kept: jnp.where(kept, probs, 0.0).sum(-1) >= top_p)
    return jnp.where(lg < cutoff[:, None], -jnp.inf, lg)

  def draw(lg):
    lg = jax.lax.cond(top_k > 0, apply_top_k, lambda x: x, lg)
    lg = jax.lax.cond(top_p < 1.0, apply_top_p, lambda x: x, lg)
    return jax.random.categorical(key, lg / jnp.maximum(temperature, 1e-6), axis=-1)

  # Greedy skips the filters (they always keep the top token) and the random draw.
  return jax.lax.cond(temperature > 0, draw, greedy_token, logits).astype(jnp.int32)


INFERENCE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def inference_dtype(dtype):
  """A dtype name or dtype -> the jnp dtype (a SamplingError names the choices)."""
  if isinstance(dtype, str):
    if dtype not in INFERENCE_DTYPES:
      raise errors.SamplingError(
        f"dtype={dtype!r} is not an inference dtype; use one of {', '.join(INFERENCE_DTYPES)}."
      )
    return INFERENCE_DTYPES[dtype]
  if jnp.dtype(dtype) not in {jnp.dtype(d) for d in INFERENCE_DTYPES.values()}:
    raise errors.SamplingError(
      f"dtype={dtype} is not an inference dtype; use one of {', '.join(INFERENCE_DTYPES)}."
    )
  return jnp.dtype(dtype).type


def cast_params(params, dtype):
  """The parameter tree (an nnx.State or a pure dict) with every floating array in `dtype`
  (integer arrays, if any, are left as they are)."""
  dtype = inference_dtype(dtype)
  return jax.tree.map(
    lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params
  )


def cast_model(model: nnx.Module, dtype) -> nnx.Module:
  """`model` rebuilt for inference in `dtype`: its parameters cast (`cast_params`) and its
  config's `dtype` and `param_dtype` set to it, so the matmuls and the KV cache run in
  `dtype` (LayerNorm statistics, attention softmax and the logits stay float32). A model
  already in `dtype` is returned as it is; the argument is never changed."""
  dtype = inference_dtype(dtype)
  cfg = model.cfg
  if cfg.dtype == dtype and cfg.param_dtype == dtype:
    return model
  new_cfg = dataclasses.replace(cfg, dtype=dtype, param_dtype=dtype)
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: models.build(new_cfg, 0)))
  return nnx.merge(graphdef, cast_params(nnx.state(model), dtype))


QUANTIZED_DTYPES = ("int8",)


def inference_model(model: nnx.Module, dtype) -> nnx.Module:
  """`model` prepared for decoding in `dtype`: a float dtype casts it (`cast_model`);
  'int8' quantizes it (`quantize.quantize_model`: int8 weights with per-output-channel
  scales and int8 activations, a GPT only). The argument is never changed."""
  if isinstance(dtype, str) and dtype in QUANTIZED_DTYPES:
    return quantize.quantize_model(model)
  if isinstance(dtype, str) and dtype not in INFERENCE_DTYPES:
    raise errors.SamplingError(
      f"dtype={dtype!r} is not an inference dtype; use one of "
      f"{', '.join([*INFERENCE_DTYPES, *QUANTIZED_DTYPES])}."
    )
  return cast_model(model, dtype)


def bucket_length(n: int, limit: int) -> int:
  return min(limit, max(16, 1 << (max(n, 1) - 1).bit_length()))


def context_windows(n_prompt: int, max_new_tokens: int, block_size: int) -> list[tuple[int, int]]:
  """(offset of the context's first token, tokens it generates) for each prefill.

  Contexts start at the prompt's start plus a multiple of `block_size // 2`, the first
  such offset that leaves room for a new token: a prompt that fits is kept whole, a longer
  one keeps its last tokens (at least half a block), and a full context moves on by half a
  block. A book's line windows start at the same offsets (`data.windows=lines`), so a
  model prompted with a line sees the contexts it was trained on."""
  half = max(1, block_size // 2)
  windows, start, length, remaining = [], 0, n_prompt, max_new_tokens
  while remaining > 0:
    while length - start >= block_size:
      start += half
    room = min(remaining, block_size - (length - start))
    windows.append((start, room))
    length, remaining = length + room, remaining - room
  return windows


class Generator:
  """Generates from a model that implements `decode(tokens, cache, pos)` and `init_cache`
  (and optionally `decode_last(tokens, cache, pos, index)`, used for the prefill).

  `dtype` (optional): decode `inference_model(model, dtype)` instead, e.g. 'bfloat16' or
  'int8'; the model given is left as it is."""

  def __init__(self, model: nnx.Module, *, eot_id: int | None = None, dtype=None):
    if dtype is not None:
      model = inference_model(model, dtype)
    self.graphdef, self.state = nnx.split(model)
    self.block_size = model.cfg.block_size
    self.eot_id = eot_id
    self.compilations = 0

  @functools.partial(jax.jit, static_argnums=0)
  def _prefill(self, state, tokens_BxT, length):
    self.compilations += 1  # Runs only while tracing.
    model = nnx.merge(self.graphdef, state)
    cache = model.init_cache(tokens_BxT.shape[0])
    if hasattr(model, "decode_last"):
      return model.decode_last(tokens_BxT, cache, 0, length - 1)
    logits_BxTxV, cache = model.decode(tokens_BxT, cache, 0)
    return jnp.take(logits_BxTxV, length - 1, axis=1), cache

  @functools.partial(jax.jit, static_argnums=0, donate_argnums=2)
  def _decode_loop(self, state, cache, logits_BxV, pos, n_steps, key, temperature, top_k, top_p):
    """Samples n_steps tokens: the first from the prefill's logits, each next one after a
    cached decode step of the previous (n_steps - 1 decode steps in all). Returns (tokens,
    cache): the cache is donated and returned so the loop updates it where it lies."""
    self.compilations += 1
    model = nnx.merge(self.graphdef, state)
    key, sub = jax.random.split(key)
    first_B = sample_token(logits_BxV, sub, temperature, top_k, top_p)
    out_BxN = jnp.zeros((logits_BxV.shape[0], self.block_size), jnp.int32).at[:, 0].set(first_B)

    def body(i, carry):
      cache, out_BxN, key = carry
      token_Bx1 = jax.lax.dynamic_slice_in_dim(out_BxN, i - 1, 1, axis=1)
      logits_Bx1xV, cache = model.decode(token_Bx1, cache, pos + i - 1)
      key, sub = jax.random.split(key)
      token_B = sample_token(logits_Bx1xV[:, 0], sub, temperature, top_k, top_p)
      return cache, jax.lax.dynamic_update_slice_in_dim(out_BxN, token_B[:, None], i, axis=1), key

    cache, out_BxN, _ = jax.lax.fori_loop(1, n_steps, body, (cache, out_BxN, key))
    return out_BxN, cache

  def generate(
    self,
    prompts: list[list[int]],
    max_new_tokens: int,
    *,
    params: SamplingParams = SamplingParams(),
    seed: int = 0,
  ) -> list[list[int]]:
    """Returns the new tokens for each prompt (all prompts must have equal length)."""
    if max_new_tokens < 0:
      raise errors.SamplingError(f"max_new_tokens={max_new_tokens} must be >= 0.")
    if max_new_tokens == 0:
      return [[] for _ in prompts]
    lengths = {len(p) for p in prompts}
    if len(lengths) != 1:
      raise errors.SamplingError(
        f"Prompts in one batch must have equal length, got {sorted(lengths)}."
      )
    seqs = [list(p) for p in prompts]
    if not seqs[0]:
      if self.eot_id is None:
        raise errors.SamplingError("Empty prompt and no end-of-text token to start from.")
      seqs = [[self.eot_id] for _ in seqs]
    n_prompt = len(seqs[0])
    windows = context_windows(n_prompt, max_new_tokens, self.block_size)
    if windows[0][0]:
      warnings.warn(
        f"Prompt of {n_prompt} tokens is longer than the context ({self.block_size}); "
        f"generating from its last {n_prompt - windows[0][0]} tokens.",
        stacklevel=2,
      )
    key = jax.random.key(seed)
    new = [[] for _ in seqs]
    for start, room in windows:
      context = [s[start:] for s in seqs]
      n = len(context[0])
      bucket = bucket_length(n, self.block_size)
      tokens = np.zeros((len(context), bucket), np.int32)
      tokens[:, :n] = np.asarray(context, np.int32)
      logits, cache = self._prefill(self.state, jnp.asarray(tokens), jnp.int32(n))
      key, sub = jax.random.split(key)
      out, _ = self._decode_loop(
        self.state,
        cache,
        logits,
        jnp.int32(n),
        jnp.int32(room),
        sub,
        jnp.float32(params.temperature),
        jnp.int32(params.top_k),
        jnp.float32(params.top_p),
      )
      out = np.asarray(out)[:, :room].tolist()
      for i, toks in enumerate(out):
        seqs[i].extend(toks)
        new[i].extend(toks)
    return new


class WindowGreedy:
  """Greedy decoding without a cache: the whole zero-padded window runs for every new token.

  The slow, obviously right decoder that cached decoding is checked and timed against
  (`tests/conv_attention_test.py`, `benchmarks/decode_conv.py`); prompt plus new tokens
  must fit the context. Compiled once per batch size.
  """

  def __init__(self, model: nnx.Module):
    self.graphdef, self.state = nnx.split(model)
    self.block_size = model.cfg.block_size

  @functools.partial(jax.jit, static_argnums=0)
  def _loop(self, state, window_BxT, start, stop):
    model = nnx.merge(self.graphdef, state)

    def step(i, window_BxT):
      logits_BxTxV = model(window_BxT)
      next_B = jnp.argmax(jnp.take(logits_BxTxV, i - 1, axis=1), axis=-1)
      return window_BxT.at[:, i].set(next_B.astype(window_BxT.dtype))

    return jax.lax.fori_loop(start, stop, step, window_BxT)

  def generate(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    n = len(prompts[0])
    if any(len(p) != n for p in prompts) or not 0 < n + max_new_tokens <= self.block_size:
      raise errors.SamplingError(
        f"WindowGreedy needs equal, non-empty prompts with prompt + max_new_tokens <= "
        f"block_size={self.block_size}; got lengths {sorted({len(p) for p in prompts})} "
        f"and max_new_tokens={max_new_tokens}."
      )
    window = np.zeros((len(prompts), self.block_size), np.int32)
    window[:, :n] = np.asarray(prompts, np.int32)
    out = self._loop(self.state, jnp.asarray(window), jnp.int32(n), jnp.int32(n + max_new_tokens))
    return np.asarray(out)[:, n : n + max_new_tokens].tolist()
