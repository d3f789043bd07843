"""The minimal KV-cache greedy decode loop: the yardstick for `llmjax.inference.generate.Generator`.

What the bare jitted step is for training, this is for decoding: the least code that
produces GPT-2's greedy continuation with a KV cache, written as plain functions over the
parameter arrays (no modules, no sampling branch, no segmenting), so any time the
`Generator` spends above it is overhead of its own.

  ref = ReferenceDecoder(params, cfg)   # params: nnx.to_pure_dict(nnx.state(gpt_model))
  tokens = ref.generate(prompt, 128)    # list of ints

One jitted prefill (the prompt right-padded to a power-of-two bucket, like the Generator),
then one jitted `fori_loop` over the new tokens (n - 1 decode steps for n tokens). The cache is
one array per layer and per key/value, batch and heads merged into one leading axis (keys
[B*H, K, S], values [B*H, S, K]: the layouts XLA's dots read as they lie, which also lets the
loop update them in place without copies), written first and then attended over with a
position mask; the logits are `x @ wte[:vocab].T`, then `jnp.argmax`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _layer_norm(x, p, eps=1e-5):
  x32 = x.astype(jnp.float32)
  mean = x32.mean(-1, keepdims=True)
  var = jnp.square(x32 - mean).mean(-1, keepdims=True)
  return (x32 - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def _flatten_layers(params, cfg):
  """Per layer: fused QKV as [D, 3*H*K], output projection as [H*K, D], as HF stores them."""
  d = cfg.n_embd
  layers = []
  for i in range(cfg.n_layer):
    p = params["h"][i]
    layers.append(
      {
        "ln_1": p["ln_1"],
        "ln_2": p["ln_2"],
        "qkv_w": p["attn"]["c_attn"].reshape(d, 3 * d),
        "qkv_b": p["attn"]["c_attn_bias"].reshape(3 * d),
        "proj_w": p["attn"]["c_proj"].reshape(d, d),
        "proj_b": p["attn"]["c_proj_bias"],
        "fc_w": p["mlp"]["c_fc"],
        "fc_b": p["mlp"]["c_fc_bias"],
        "out_w": p["mlp"]["c_proj"],
        "out_b": p["mlp"]["c_proj_bias"],
      }
    )
  return layers


def _block(x_BxTxD, p, k_cache, v_cache, pos, n_head):
  """One block on T new positions starting at `pos`; returns (x, k_cache, v_cache).

  Caches: keys [N, K, S], values [N, S, K], N = B*H.
  """
  b, t, d = x_BxTxD.shape
  hd = d // n_head
  n = b * n_head
  h = _layer_norm(x_BxTxD, p["ln_1"])
  qkv = (h @ p["qkv_w"] + p["qkv_b"]).reshape(b, t, 3, n_head, hd)
  q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3).reshape(n, t, hd) for i in range(3))
  k_cache = jax.lax.dynamic_update_slice_in_dim(k_cache, k.transpose(0, 2, 1), pos, axis=2)
  v_cache = jax.lax.dynamic_update_slice_in_dim(v_cache, v, pos, axis=1)
  s = v_cache.shape[1]
  scores_NxTxS = jnp.einsum("ntk,nks->nts", q, k_cache) / np.sqrt(hd)
  visible_TxS = jnp.arange(s)[None, :] <= (pos + jnp.arange(t))[:, None]
  probs = jax.nn.softmax(jnp.where(visible_TxS, scores_NxTxS, -jnp.inf), axis=-1)
  y = jnp.einsum("nts,nsk->ntk", probs, v_cache).reshape(b, n_head, t, hd)
  y = y.transpose(0, 2, 1, 3).reshape(b, t, d)
  x_BxTxD = x_BxTxD + y @ p["proj_w"] + p["proj_b"]
  h = _layer_norm(x_BxTxD, p["ln_2"])
  h = jax.nn.gelu(h @ p["fc_w"] + p["fc_b"], approximate=True)
  return x_BxTxD + h @ p["out_w"] + p["out_b"], k_cache, v_cache


def _logits(x_BxD, wte_VxD, vocab_size):
  # Contracting the table's minor axis directly: `x @ wte.T` makes XLA:CPU copy the
  # transposed 77 MB table on every token.
  return jnp.einsum("bd,vd->bv", x_BxD, wte_VxD)[:, :vocab_size]


def _forward(params, layers, tokens_BxT, caches, pos, n_head):
  x = (
    params["wte"][tokens_BxT]
    + jax.lax.dynamic_slice_in_dim(params["wpe"], pos, tokens_BxT.shape[1], axis=0)[None]
  )
  new_caches = []
  for p, (k_cache, v_cache) in zip(layers, caches):
    x, k_cache, v_cache = _block(x, p, k_cache, v_cache, pos, n_head)
    new_caches.append((k_cache, v_cache))
  return _layer_norm(x, params["ln_f"]), new_caches


class ReferenceDecoder:
  """Greedy decoding of a GPT-2 parameter dict with a KV cache; float32 throughout."""

  def __init__(self, params, cfg):
    self.cfg = cfg
    self.params = jax.tree.map(jnp.asarray, {k: params[k] for k in ("wte", "wpe", "ln_f")})
    self.layers = jax.tree.map(jnp.asarray, _flatten_layers(params, cfg))

  @functools.partial(jax.jit, static_argnums=0)
  def _prefill(self, params, layers, tokens_BxT, length):
    cfg = self.cfg
    b = tokens_BxT.shape[0]
    h, k, s = cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
    caches = [(jnp.zeros((b * h, k, s)), jnp.zeros((b * h, s, k))) for _ in range(cfg.n_layer)]
    x_BxTxD, caches = _forward(params, layers, tokens_BxT, caches, 0, cfg.n_head)
    x_BxD = jnp.take(x_BxTxD, length - 1, axis=1)
    first_B = jnp.argmax(_logits(x_BxD, params["wte"], cfg.vocab_size), axis=-1)
    return first_B.astype(jnp.int32), caches

  @functools.partial(jax.jit, static_argnums=0)
  def _decode(self, params, layers, caches, first_B, length, n_new):
    cfg = self.cfg
    out_BxN = jnp.zeros((first_B.shape[0], cfg.block_size), jnp.int32).at[:, 0].set(first_B)

    def step(i, carry):
      out_BxN, caches = carry
      token_Bx1 = jax.lax.dynamic_slice_in_dim(out_BxN, i - 1, 1, axis=1)
      x_Bx1xD, caches = _forward(params, layers, token_Bx1, caches, length + i - 1, cfg.n_head)
      logits_BxV = _logits(x_Bx1xD[:, 0], params["wte"], cfg.vocab_size)
      next_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
      return jax.lax.dynamic_update_slice_in_dim(out_BxN, next_B[:, None], i, axis=1), caches

    out_BxN, _ = jax.lax.fori_loop(1, n_new, step, (out_BxN, caches))
    return out_BxN

  def generate(self, prompt: list[int], n_new: int) -> list[int]:
    """Greedy continuation of one prompt (prompt + n_new must fit in the context)."""
    n = len(prompt)
    if not 0 < n_new <= self.cfg.block_size - n:
      raise ValueError(f"n_new={n_new} must be in 1..{self.cfg.block_size - n}.")
    bucket = min(self.cfg.block_size, max(16, 1 << (n - 1).bit_length()))
    tokens = np.zeros((1, bucket), np.int32)
    tokens[0, :n] = prompt
    first, caches = self._prefill(self.params, self.layers, jnp.asarray(tokens), jnp.int32(n))
    out = self._decode(self.params, self.layers, caches, first, jnp.int32(n), jnp.int32(n_new))
    return np.asarray(out)[0, :n_new].tolist()


class WeightsFloor:
  """What reading the weights costs: per token, only the model's matrix-vector products (every
  block weight and the output table, once each, in the decode loop's order) and the argmax
  that feeds the next token back; no attention, cache, norms or prompt. Its tokens are not a
  continuation of anything. At batch 1 a decoder's per-token time over this one is what it
  spends beyond moving the weights through the CPU's dot kernels."""

  def __init__(self, params, cfg):
    self.cfg = cfg
    self.wte = jnp.asarray(params["wte"])
    self.layers = jax.tree.map(jnp.asarray, _flatten_layers(params, cfg))

  @functools.partial(jax.jit, static_argnums=0)
  def _loop(self, wte, layers, first_B, n_new):
    cfg, d = self.cfg, self.cfg.n_embd

    def step(i, out_BxN):
      x_BxD = wte[jax.lax.dynamic_index_in_dim(out_BxN, i - 1, axis=1, keepdims=False)]
      for p in layers:
        qkv = x_BxD @ p["qkv_w"]
        x_BxD = x_BxD + (qkv[:, :d] * qkv[:, d : 2 * d] + qkv[:, 2 * d :]) @ p["proj_w"]
        x_BxD = x_BxD + jax.nn.gelu(x_BxD @ p["fc_w"]) @ p["out_w"]
      next_B = jnp.argmax(_logits(x_BxD, wte, cfg.vocab_size), axis=-1).astype(jnp.int32)
      return jax.lax.dynamic_update_slice_in_dim(out_BxN, next_B[:, None], i, axis=1)

    out_BxN = jnp.zeros((first_B.shape[0], cfg.block_size), jnp.int32).at[:, 0].set(first_B)
    return jax.lax.fori_loop(1, n_new, step, out_BxN)

  def generate(self, prompt: list[int], n_new: int) -> list[int]:
    """n_new tokens, the first being the prompt's last (same call shape as the decoders)."""
    out = self._loop(self.wte, self.layers, jnp.asarray([prompt[-1]], jnp.int32), jnp.int32(n_new))
    return np.asarray(out)[0, :n_new].tolist()
