"""Which of two answers did people prefer? A shared encoder reads both, an MLP decides.

Each side is `[CLS] prompt [SEP] response [SEP]` (the prompt prepended to the
response). A and B go through the same encoder in one call (stacked on the batch
axis), are pooled (CLS token or mean over real tokens) to `a`, `b` of width D, and
the head sees `[a, b]`, or `[a, b, |a-b|, a*b]` with `diff_prod`:

    logits_Bx3 = W2 gelu(W1 features + c1) + c2      classes: A wins, B wins, tie

Freezing (which parameters train) is decided outside the module, by
`trainable_mask(params, mode, k)`: `frozen` (head only), `bottom_frozen` (embeddings and
the bottom k encoder layers fixed), `full`, or `random` (everything trains, as in `full`;
the encoder starts from random weights instead of the checkpoint's, see
`llmjax.models.build_classifier`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from llmjax.models.encoder import Encoder
from llmjax.util import errors

CLASSES = ("model_a", "model_b", "tie")
A_WINS, B_WINS, TIE = 0, 1, 2
# Relabelling when A and B trade places.
SWAP_CLASSES = (B_WINS, A_WINS, TIE)
POOLINGS = ("cls", "mean")
FREEZE_MODES = ("frozen", "bottom_frozen", "full", "random")


@dataclasses.dataclass(frozen=True)
class HeadConfig:
  """The pooling and MLP head on top of the encoder."""

  pooling: str = "mean"  # cls: first token's state; mean: average over real tokens.
  diff_prod: bool = True  # Also feed |a-b| and a*b to the head.
  hidden: int = 256  # Head MLP width.
  dropout: float = 0.1  # Dropout on the head input and hidden layer (training only).
  num_classes: int = len(CLASSES)

  def __post_init__(self):
    if self.pooling not in POOLINGS:
      raise errors.ConfigError(f"pooling={self.pooling!r}; use one of {POOLINGS}")


def pool(hidden_BxTxD: jax.Array, mask_BxT: jax.Array, pooling: str) -> jax.Array:
  """BxD: the first ([CLS]) token's state, or the mean over tokens with mask 1."""
  if pooling == "cls":
    return hidden_BxTxD[:, 0]
  keep_BxTx1 = mask_BxT[..., None].astype(jnp.float32)
  total_BxD = (hidden_BxTxD.astype(jnp.float32) * keep_BxTx1).sum(1)
  return total_BxD / jnp.maximum(keep_BxTx1.sum(1), 1.0)


def _dropout(x, rate: float, rngs: nnx.Rngs | None):
  if rngs is None or rate == 0.0:
    return x
  keep = jax.random.bernoulli(rngs.dropout(), 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


class PairClassifier(nnx.Module):
  """Encoder + pooling + MLP head over a pair of (prompt, response) sequences."""

  def __init__(self, encoder: Encoder, cfg: HeadConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.encoder = encoder
    d = encoder.cfg.hidden_size
    n_in = (4 if cfg.diff_prod else 2) * d
    self.head_in = nnx.Linear(n_in, cfg.hidden, rngs=rngs)
    self.head_out = nnx.Linear(cfg.hidden, cfg.num_classes, rngs=rngs)

  def embed(self, ids_BxT, mask_BxT, types_BxT=None, rngs: nnx.Rngs | None = None):
    """Pooled float32 encodings BxD of a batch of sequences."""
    hidden_BxTxD = self.encoder(ids_BxT, mask_BxT, types_BxT, rngs=rngs)
    return pool(hidden_BxTxD, mask_BxT, self.cfg.pooling).astype(jnp.float32)

  def encode_pair(
    self, a: dict[str, jax.Array], b: dict[str, jax.Array], rngs: nnx.Rngs | None = None
  ) -> tuple[jax.Array, jax.Array]:
    """Pooled encodings (a_BxD, b_BxD) of both sides, from one encoder call."""
    batch = a["ids"].shape[0]
    stacked = {k: jnp.concatenate([a[k], b[k]]) for k in ("ids", "mask", "types")}
    pooled_2BxD = self.embed(stacked["ids"], stacked["mask"], stacked["types"], rngs)
    return pooled_2BxD[:batch], pooled_2BxD[batch:]

  def head(self, a_BxD: jax.Array, b_BxD: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
    """Logits Bx3 from pooled encodings."""
    parts = [a_BxD, b_BxD]
    if self.cfg.diff_prod:
      parts += [jnp.abs(a_BxD - b_BxD), a_BxD * b_BxD]
    x_BxF = _dropout(jnp.concatenate(parts, axis=-1), self.cfg.dropout, rngs)
    h_BxH = _dropout(jax.nn.gelu(self.head_in(x_BxF)), self.cfg.dropout, rngs)
    return self.head_out(h_BxH).astype(jnp.float32)

  def __call__(
    self, a: dict[str, jax.Array], b: dict[str, jax.Array], rngs: nnx.Rngs | None = None
  ) -> jax.Array:
    """Logits Bx3 for sides `a`, `b`: dicts of `ids`, `mask`, `types` (each BxT)."""
    return self.head(*self.encode_pair(a, b, rngs), rngs)


def swap_probs(probs_Bx3: jax.Array) -> jax.Array:
  """Class probabilities of the swapped pair expressed for the original order."""
  return probs_Bx3[..., jnp.asarray(SWAP_CLASSES)]


def predict_probs(model: PairClassifier, a, b, both_orders: bool) -> jax.Array:
  """Bx3 probabilities; with `both_orders`, averaged with the prediction for (b, a)."""
  a_BxD, b_BxD = model.encode_pair(a, b)
  probs = jax.nn.softmax(model.head(a_BxD, b_BxD), axis=-1)
  if both_orders:  # The encodings do not depend on the order; only the head runs twice.
    probs = 0.5 * (probs + swap_probs(jax.nn.softmax(model.head(b_BxD, a_BxD), axis=-1)))
  return probs


def _encoder_group(path: tuple[Any, ...], num_stored_layers: int) -> int:
  """Depth of an encoder parameter: -1 embeddings (and DeBERTa's relative-position
  table, read by every layer), i for layer i (DeBERTa's convolution counts as layer 0)."""
  top = str(path[0])
  if top == "layers":
    return int(path[1])
  if top == "conv":
    return 0
  if top in ("embed", "rel_embed", "rel_norm"):
    return -1
  raise ValueError(f"no freezing rule for encoder parameter {'.'.join(map(str, path))}")


def trainable_mask(
  params: dict, mode: str, frozen_layers: int = 0, num_stored_layers: int | None = None
) -> dict:
  """A tree of Python bools (True = trains) matching a PairClassifier's pure-dict params.

  frozen: only the head trains. bottom_frozen: the embeddings and encoder layers
  0..k-1 stay fixed (k = frozen_layers; for ALBERT, stored layers). full and random:
  all train.
  """
  if mode not in FREEZE_MODES:
    raise errors.ConfigError(f"freeze mode {mode!r}; use one of {FREEZE_MODES}")
  n = num_stored_layers if num_stored_layers is not None else len(params["encoder"]["layers"])
  if mode == "bottom_frozen" and not 0 <= frozen_layers <= n:
    raise errors.ConfigError(
      f"frozen_layers={frozen_layers} must lie in [0, {n}] (the encoder has {n} stored layers)"
    )

  def one(path, _):
    keys = tuple(getattr(p, "key", getattr(p, "idx", p)) for p in path)
    if keys[0] != "encoder" or mode in ("full", "random"):
      return True
    if mode == "frozen":
      return False
    return _encoder_group(keys[1:], n) >= frozen_layers

  return jax.tree_util.tree_map_with_path(one, params)
