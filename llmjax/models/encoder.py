"""Bidirectional Transformer encoders: BERT, DistilBERT, RoBERTa, ELECTRA, ALBERT, DeBERTa
(v1, v2 and v3).

All seven families share one post-LayerNorm block (attention, add & norm, feed-forward,
add & norm); they differ in how tokens are embedded, whether layers share weights,
and how attention scores are formed:

  bert        word + position + token-type embeddings, LayerNorm.
  distilbert  word + position embeddings (no token types).
  roberta     like bert, but position ids count non-padding tokens from pad_token_id + 1.
  electra     like bert, embeddings in `embedding_size` projected up to `hidden_size`.
  albert      like electra, and layers share weights in groups.
  deberta-v2  disentangled attention: content-to-position and position-to-content
              scores against relative-position embeddings (optionally log-bucketed),
              an optional convolution after the first layer, pairwise padding masks.
  deberta     DeBERTa v1 (microsoft/deberta-base): the same disentangled attention
              without log buckets, convolution or shared keys; the key projection and
              the position-key projection have no bias (v1 stores query, key and value
              as one `in_proj` matrix plus separate query and value biases).

`llmjax.pretrained.from_hf` builds an `Encoder` from a Hugging Face checkpoint; the
outputs equal the `transformers` implementations (eager attention) within 1e-4 in fp32.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llmjax.models.relative_positions import relative_positions

FAMILIES = ("bert", "distilbert", "roberta", "electra", "albert", "deberta", "deberta-v2")
DEBERTA_FAMILIES = ("deberta", "deberta-v2")

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "gelu": functools.partial(jax.nn.gelu, approximate=False),
  "gelu_python": functools.partial(jax.nn.gelu, approximate=False),
  "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
  "gelu_fast": functools.partial(jax.nn.gelu, approximate=True),
  "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
  "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
  "relu": jax.nn.relu,
  "silu": jax.nn.silu,
  "swish": jax.nn.silu,
  "tanh": jnp.tanh,
}


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
  """Returns the activation called `name` in Hugging Face configs."""
  if name not in _ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; supported: {sorted(_ACTIVATIONS)}")
  return _ACTIVATIONS[name]


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  """Hyperparameters of an encoder; `from_hf` fills them from a checkpoint's config.json."""

  family: str = "bert"  # one of FAMILIES: embedding wiring, masks and weight names.
  vocab_size: int = 30522  # rows of the word-embedding table.
  hidden_size: int = 768  # width D of the residual stream.
  num_layers: int = 12  # transformer blocks applied (ALBERT: applications of shared groups).
  num_heads: int = 12  # attention heads H.
  head_dim: int | None = None  # per-head width K; None = hidden_size // num_heads.
  intermediate_size: int = 3072  # feed-forward width.
  activation: str = "gelu"  # feed-forward activation, Hugging Face name.
  layer_norm_eps: float = 1e-12  # epsilon of every LayerNorm.
  embedding_size: int | None = None  # factorised embedding width; None = hidden_size.
  max_position_embeddings: int = 512  # rows of the absolute position table.
  absolute_positions: bool = True  # add absolute position embeddings to the input.
  type_vocab_size: int = 2  # rows of the token-type table; 0 = no token types.
  pad_token_id: int = 0  # padding id (RoBERTa position ids start after it).
  num_layer_groups: int | None = None  # ALBERT weight sharing; None = no sharing.
  inner_group_size: int = 1  # ALBERT: distinct layers inside each shared group.
  relative_attention: bool = False  # DeBERTa: add disentangled relative-position scores.
  pos_att_type: tuple[str, ...] = ()  # DeBERTa: subset of ("c2p", "p2c").
  position_buckets: int = -1  # DeBERTa: log-bucket count; <= 0 = plain relative distances.
  max_relative_positions: int = (
    -1
  )  # DeBERTa: relative distance span; < 1 = max_position_embeddings.
  share_att_key: bool = False  # DeBERTa: project positions with the content query/key weights.
  norm_rel_embeddings: bool = False  # DeBERTa: LayerNorm on the relative-position table.
  conv_kernel_size: int = 0  # DeBERTa-v2: kernel of the convolution after layer 0; 0 = none.
  conv_groups: int = 1  # DeBERTa-v2: feature groups of that convolution.
  conv_activation: str = "tanh"  # DeBERTa-v2: activation of that convolution.
  hidden_dropout: float = 0.0  # dropout on embeddings and residual branches (only with rngs).
  attention_dropout: float = 0.0  # dropout on attention probabilities (only with rngs).
  dtype: Any = jnp.float32  # computation dtype (a dtype or its name, e.g. "bfloat16").
  param_dtype: Any = jnp.float32  # parameter storage dtype (a dtype or its name).

  def __post_init__(self):
    object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
    object.__setattr__(self, "param_dtype", jnp.dtype(self.param_dtype))
    if self.family not in FAMILIES:
      raise ValueError(f"unknown encoder family {self.family!r}; supported: {FAMILIES}")
    if self.head_dim is None and self.hidden_size % self.num_heads:
      raise ValueError(
        f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads};"
        " set head_dim explicitly"
      )
    if self.num_layer_groups is not None and not 0 < self.num_layer_groups <= self.num_layers:
      raise ValueError(
        f"num_layer_groups={self.num_layer_groups} must lie in [1, num_layers={self.num_layers}]"
      )
    unknown = set(self.pos_att_type) - {"c2p", "p2c"}
    if unknown:
      raise ValueError(
        f"pos_att_type {self.pos_att_type} has unknown entries {sorted(unknown)};"
        " use 'c2p' and/or 'p2c'"
      )
    activation_fn(self.activation)

  @property
  def is_deberta(self) -> bool:
    """DeBERTa v1, v2 or v3: pairwise padding masks, project-then-normalise embeddings."""
    return self.family in DEBERTA_FAMILIES

  @property
  def qk_dim(self) -> int:
    """Per-head width K."""
    return self.head_dim or self.hidden_size // self.num_heads

  @property
  def embed_dim(self) -> int:
    """Width of the embedding tables."""
    return self.embedding_size or self.hidden_size

  @property
  def rel_span(self) -> int:
    """DeBERTa: half the number of rows of the relative-position table."""
    return self.position_buckets if self.position_buckets > 0 else self.max_rel_positions

  @property
  def max_rel_positions(self) -> int:
    """DeBERTa: the relative distance span, with Hugging Face's default applied."""
    if self.max_relative_positions < 1:
      return self.max_position_embeddings
    return self.max_relative_positions

  def layer_schedule(self) -> list[int]:
    """Index of the stored layer applied at each step (ALBERT repeats shared groups)."""
    if self.num_layer_groups is None:
      return list(range(self.num_layers))
    per_group = self.num_layers / self.num_layer_groups
    return [
      int(i / per_group) * self.inner_group_size + k
      for i in range(self.num_layers)
      for k in range(self.inner_group_size)
    ]

  @property
  def num_stored_layers(self) -> int:
    if self.num_layer_groups is None:
      return self.num_layers
    return self.num_layer_groups * self.inner_group_size


def _dropout(x: jax.Array, rate: float, rngs: nnx.Rngs | None) -> jax.Array:
  if rngs is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(rngs.dropout(), 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def _layer_norm(dim: int, cfg: EncoderConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(
    dim,
    epsilon=cfg.layer_norm_eps,
    use_fast_variance=False,
    dtype=cfg.dtype,
    param_dtype=cfg.param_dtype,
    rngs=rngs,
  )


def _linear(
  din: int, dout: int, cfg: EncoderConfig, rngs: nnx.Rngs, use_bias: bool = True
) -> nnx.Linear:
  return nnx.Linear(
    din, dout, use_bias=use_bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs
  )


def _embed(num: int, dim: int, cfg: EncoderConfig, rngs: nnx.Rngs) -> nnx.Embed:
  return nnx.Embed(num, dim, dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)


class Attention(nnx.Module):
  """Multi-head self-attention with optional DeBERTa disentangled position scores."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d, hk = cfg.hidden_size, cfg.num_heads * cfg.qk_dim
    v1 = cfg.family == "deberta"  # DeBERTa v1 has no key or position-key bias.
    self.query = _linear(d, hk, cfg, rngs)
    self.key = _linear(d, hk, cfg, rngs, use_bias=not v1)
    self.value = _linear(d, hk, cfg, rngs)
    self.out = _linear(hk, d, cfg, rngs)
    separate = cfg.relative_attention and not cfg.share_att_key
    self.pos_key = (
      _linear(d, hk, cfg, rngs, use_bias=not v1) if separate and "c2p" in cfg.pos_att_type else None
    )
    self.pos_query = _linear(d, hk, cfg, rngs) if separate and "p2c" in cfg.pos_att_type else None

  def _heads(self, x_BxTxHK: jax.Array) -> jax.Array:
    return x_BxTxHK.reshape(*x_BxTxHK.shape[:-1], self.cfg.num_heads, self.cfg.qk_dim)

  def __call__(
    self,
    x_BxTxD: jax.Array,
    mask_BxHxTxS: jax.Array,
    rel_RxD: jax.Array | None,
    rel_pos_TxS: np.ndarray | None,
    rngs: nnx.Rngs | None,
  ) -> jax.Array:
    cfg = self.cfg
    q_BxTxHxK = self._heads(self.query(x_BxTxD))
    k_BxSxHxK = self._heads(self.key(x_BxTxD))
    v_BxSxHxK = self._heads(self.value(x_BxTxD))

    if cfg.is_deberta:
      # Content and position scores share one temperature: sqrt(K * number of terms).
      scale = float(np.sqrt(np.float32(cfg.qk_dim * (1 + len(cfg.pos_att_type)))))
    else:
      scale = float(np.sqrt(cfg.qk_dim))
    scores_BxHxTxS = jnp.einsum("bthk,bshk->bhts", q_BxTxHxK, k_BxSxHxK) / scale
    if cfg.relative_attention:
      scores_BxHxTxS += self._position_scores(q_BxTxHxK, k_BxSxHxK, rel_RxD, rel_pos_TxS) / scale

    scores_BxHxTxS = scores_BxHxTxS.astype(jnp.float32)
    scores_BxHxTxS = jnp.where(mask_BxHxTxS, scores_BxHxTxS, jnp.finfo(jnp.float32).min)
    probs_BxHxTxS = jax.nn.softmax(scores_BxHxTxS, axis=-1).astype(cfg.dtype)
    probs_BxHxTxS = _dropout(probs_BxHxTxS, cfg.attention_dropout, rngs)
    out_BxTxHxK = jnp.einsum("bhts,bshk->bthk", probs_BxHxTxS, v_BxSxHxK)
    return self.out(out_BxTxHxK.reshape(*out_BxTxHxK.shape[:2], -1))

  def _position_scores(self, q_BxTxHxK, k_BxSxHxK, rel_RxD, rel_pos_TxS):
    """Content-to-position plus position-to-content scores (unscaled), BxHxTxS."""
    cfg = self.cfg
    span = cfg.rel_span
    rel_RxD = rel_RxD[: 2 * span]
    score_BxHxTxS = 0.0
    if "c2p" in cfg.pos_att_type:
      pos_k_RxHxK = self._heads((self.key if cfg.share_att_key else self.pos_key)(rel_RxD))
      c2p_BxHxTxR = jnp.einsum("bthk,rhk->bhtr", q_BxTxHxK, pos_k_RxHxK)
      # Query t looks up the embedding of its distance to key s.
      idx_TxS = np.clip(rel_pos_TxS + span, 0, 2 * span - 1)
      score_BxHxTxS += jnp.take_along_axis(
        c2p_BxHxTxR, jnp.broadcast_to(idx_TxS, c2p_BxHxTxR.shape[:2] + idx_TxS.shape), axis=-1
      )
    if "p2c" in cfg.pos_att_type:
      pos_q_RxHxK = self._heads((self.query if cfg.share_att_key else self.pos_query)(rel_RxD))
      p2c_BxHxSxR = jnp.einsum("bshk,rhk->bhsr", k_BxSxHxK, pos_q_RxHxK)
      # Key s looks up the embedding of the negated distance, then transpose to BxHxTxS.
      idx_SxT = np.clip(-rel_pos_TxS + span, 0, 2 * span - 1)
      p2c_BxHxSxT = jnp.take_along_axis(
        p2c_BxHxSxR, jnp.broadcast_to(idx_SxT, p2c_BxHxSxR.shape[:2] + idx_SxT.shape), axis=-1
      )
      score_BxHxTxS += jnp.swapaxes(p2c_BxHxSxT, -1, -2)
    return score_BxHxTxS


class EncoderLayer(nnx.Module):
  """Post-LayerNorm block: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.attn = Attention(cfg, rngs=rngs)
    self.attn_norm = _layer_norm(cfg.hidden_size, cfg, rngs)
    self.ffn_in = _linear(cfg.hidden_size, cfg.intermediate_size, cfg, rngs)
    self.ffn_out = _linear(cfg.intermediate_size, cfg.hidden_size, cfg, rngs)
    self.ffn_norm = _layer_norm(cfg.hidden_size, cfg, rngs)

  def __call__(self, x_BxTxD, mask_BxHxTxS, rel_RxD, rel_pos_TxS, rngs):
    h_BxTxD = self.attn(x_BxTxD, mask_BxHxTxS, rel_RxD, rel_pos_TxS, rngs)
    x_BxTxD = self.attn_norm(x_BxTxD + _dropout(h_BxTxD, self.cfg.hidden_dropout, rngs))
    h_BxTxF = activation_fn(self.cfg.activation)(self.ffn_in(x_BxTxD))
    h_BxTxD = self.ffn_out(h_BxTxF)
    return self.ffn_norm(x_BxTxD + _dropout(h_BxTxD, self.cfg.hidden_dropout, rngs))


class Embeddings(nnx.Module):
  """Token (+ position) (+ token type) embeddings, LayerNorm, optional projection to D."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    e, d = cfg.embed_dim, cfg.hidden_size
    self.word = _embed(cfg.vocab_size, e, cfg, rngs)
    self.position = (
      _embed(cfg.max_position_embeddings, e, cfg, rngs) if cfg.absolute_positions else None
    )
    self.token_type = _embed(cfg.type_vocab_size, e, cfg, rngs) if cfg.type_vocab_size > 0 else None
    # DeBERTa projects before normalising (no bias); ELECTRA and ALBERT normalise first.
    self.project_first = cfg.is_deberta
    self.norm = _layer_norm(d if self.project_first else e, cfg, rngs)
    self.proj = _linear(e, d, cfg, rngs, use_bias=not self.project_first) if e != d else None

  def position_ids(self, input_ids_BxT: jax.Array) -> jax.Array:
    cfg = self.cfg
    _, t = input_ids_BxT.shape
    if cfg.family == "roberta":
      if t + cfg.pad_token_id >= cfg.max_position_embeddings:
        raise ValueError(
          f"sequence length {t} too long: RoBERTa positions start at pad_token_id"
          f" + 1 = {cfg.pad_token_id + 1} and max_position_embeddings is "
          f"{cfg.max_position_embeddings}; truncate to "
          f"{cfg.max_position_embeddings - cfg.pad_token_id - 1} tokens"
        )
      real_BxT = (input_ids_BxT != cfg.pad_token_id).astype(jnp.int32)
      return jnp.cumsum(real_BxT, axis=1) * real_BxT + cfg.pad_token_id
    if t > cfg.max_position_embeddings:
      raise ValueError(
        f"sequence length {t} exceeds max_position_embeddings="
        f"{cfg.max_position_embeddings}; truncate the input"
      )
    return jnp.broadcast_to(jnp.arange(t), input_ids_BxT.shape)

  def __call__(self, input_ids_BxT, token_type_ids_BxT, rngs):
    x_BxTxE = self.word(input_ids_BxT)
    if self.position is not None:
      x_BxTxE += self.position(self.position_ids(input_ids_BxT))
    if self.token_type is not None:
      x_BxTxE += self.token_type(token_type_ids_BxT)
    if self.project_first:
      if self.proj is not None:
        x_BxTxE = self.proj(x_BxTxE)
      x_BxTxD = self.norm(x_BxTxE)
    else:
      x_BxTxD = self.norm(x_BxTxE)
      if self.proj is not None:
        x_BxTxD = self.proj(x_BxTxD)
    return _dropout(x_BxTxD, self.cfg.hidden_dropout, rngs)


class ConvLayer(nnx.Module):
  """DeBERTa-v2: a 1-D convolution over the embeddings, merged into layer 0's output."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    pad = (cfg.conv_kernel_size - 1) // 2
    self.conv = nnx.Conv(
      cfg.hidden_size,
      cfg.hidden_size,
      cfg.conv_kernel_size,
      padding=[(pad, pad)],
      feature_group_count=cfg.conv_groups,
      dtype=cfg.dtype,
      param_dtype=cfg.param_dtype,
      rngs=rngs,
    )
    self.norm = _layer_norm(cfg.hidden_size, cfg, rngs)

  def __call__(self, embed_BxTxD, layer_BxTxD, mask_BxT, rngs):
    keep_BxTx1 = mask_BxT[..., None]
    h_BxTxD = jnp.where(keep_BxTx1, self.conv(embed_BxTxD), 0)
    h_BxTxD = activation_fn(self.cfg.conv_activation)(
      _dropout(h_BxTxD, self.cfg.hidden_dropout, rngs)
    )
    return self.norm(layer_BxTxD + h_BxTxD) * keep_BxTx1.astype(h_BxTxD.dtype)


class Encoder(nnx.Module):
  """A bidirectional encoder; see the module docstring for the families."""

  def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = Embeddings(cfg, rngs=rngs)
    self.layers = nnx.List([EncoderLayer(cfg, rngs=rngs) for _ in range(cfg.num_stored_layers)])
    if cfg.relative_attention:
      self.rel_embed = _embed(2 * cfg.rel_span, cfg.hidden_size, cfg, rngs)
      self.rel_norm = _layer_norm(cfg.hidden_size, cfg, rngs) if cfg.norm_rel_embeddings else None
    else:
      self.rel_embed, self.rel_norm = None, None
    self.conv = ConvLayer(cfg, rngs=rngs) if cfg.conv_kernel_size > 0 else None

  def __call__(
    self,
    input_ids_BxT: jax.Array,
    attention_mask_BxT: jax.Array | None = None,
    token_type_ids_BxT: jax.Array | None = None,
    *,
    output_hidden_states: bool = False,
    rngs: nnx.Rngs | None = None,
  ):
    """Encodes a batch of token ids.

    Args:
      input_ids_BxT: int token ids.
      attention_mask_BxT: 1 for real tokens, 0 for padding; None = all real.
      token_type_ids_BxT: segment ids; None = all 0.
      output_hidden_states: also return every hidden state.
      rngs: dropout is applied only when given (needs a `dropout` stream).

    Returns:
      The last hidden states BxTxD; with output_hidden_states, a pair of those and the
      tuple (embedding output, output of each layer application).
    """
    cfg = self.cfg
    if input_ids_BxT.ndim != 2:
      raise ValueError(f"input_ids must be BxT, got shape {input_ids_BxT.shape}")
    if attention_mask_BxT is None:
      attention_mask_BxT = jnp.ones(input_ids_BxT.shape, jnp.bool_)
    if token_type_ids_BxT is None:
      token_type_ids_BxT = jnp.zeros(input_ids_BxT.shape, jnp.int32)
    mask_BxT = attention_mask_BxT.astype(jnp.bool_)

    x_BxTxD = self.embed(input_ids_BxT, token_type_ids_BxT, rngs)
    if cfg.is_deberta:
      # DeBERTa zeroes padded embeddings and masks padded queries as well as keys.
      x_BxTxD = x_BxTxD * mask_BxT[..., None].astype(x_BxTxD.dtype)
      mask_BxHxTxS = mask_BxT[:, None, :, None] & mask_BxT[:, None, None, :]
    else:
      mask_BxHxTxS = mask_BxT[:, None, None, :]

    rel_RxD, rel_pos_TxS = None, None
    if cfg.relative_attention:
      rel_RxD = self.rel_embed.embedding[...].astype(cfg.dtype)
      if self.rel_norm is not None:
        rel_RxD = self.rel_norm(rel_RxD)
      rel_RxD = _dropout(rel_RxD, cfg.hidden_dropout, rngs)
      rel_pos_TxS = relative_positions(
        input_ids_BxT.shape[1], cfg.position_buckets, cfg.max_rel_positions
      )

    embed_BxTxD = x_BxTxD
    hidden = [x_BxTxD]
    for step, index in enumerate(cfg.layer_schedule()):
      x_BxTxD = self.layers[index](x_BxTxD, mask_BxHxTxS, rel_RxD, rel_pos_TxS, rngs)
      if step == 0 and self.conv is not None:
        x_BxTxD = self.conv(embed_BxTxD, x_BxTxD, mask_BxT, rngs)
      hidden.append(x_BxTxD)
    if output_hidden_states:
      return x_BxTxD, tuple(hidden)
    return x_BxTxD
