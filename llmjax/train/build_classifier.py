"""Builds the arena pair classifier (encoder + head) and its tokenizer from the
`classifier` config section: a pretrained encoder checkpoint, the same architecture with
random weights (`classifier.freeze='random'`), or a scratch encoder. The tokenizer is the
checkpoint's, `classifier.tokenizer` when set (a directory, hub id, `minilm`, or
`synthetic`: the 36-token vocabulary of the generated rows, for offline smoke runs).

`random` reads only the checkpoint's config.json (and its tokenizer) and initialises the
encoder as `transformers` does for a model built from its config (N(0, 0.02^2) matrices,
zero biases; `llmjax.pretrained.random_init`), seeded by `train.seed`. The
whole model then trains, like `full`: the original study's "random" row fine-tuned the
randomly initialised encoder together with the head.
"""

from __future__ import annotations

from typing import Any

import ml_collections
from flax import nnx

from llmjax.data import arena
from llmjax.models import pair_classifier as pc
from llmjax.models.encoder import Encoder, EncoderConfig
from llmjax.pretrained import from_hf, load_tokenizer, random_init
from llmjax.util import assets, errors

RANDOM = "random"  # classifier.freeze value: the checkpoint's architecture, random weights.
SYNTHETIC_TOKENIZER = "synthetic"  # classifier.tokenizer value: arena.synthetic_tokenizer().


def resolve_checkpoint(name: str) -> str:
  """`minilm` names the offline all-MiniLM-L6-v2 copy; anything else passes through."""
  return str(assets.minilm_dir()) if name == "minilm" else name


def _pad_id(tokenizer) -> int:
  for token in ("[PAD]", "<pad>"):
    if tokenizer.token_to_id(token) is not None:
      return tokenizer.token_to_id(token)
  return 0


def _not_an_encoder(init_from: str) -> errors.ConfigError:
  return errors.ConfigError(
    f"classifier.init_from={init_from!r} is not an encoder "
    "checkpoint (BERT, DistilBERT, RoBERTa, ELECTRA, ALBERT, "
    "DeBERTa v1/v2/v3)."
  )


def build_model(cc: ml_collections.ConfigDict, seed: int):
  """(PairClassifier, tokenizer) for the `classifier` config section.

  `seed` seeds the head and, for `init_from='scratch'` or `freeze='random'`, the encoder.
  """
  if cc.init_from == "scratch" and not cc.tokenizer:
    raise errors.ConfigError(
      "classifier.init_from='scratch' needs classifier.tokenizer (a "
      "tokenizer directory, hub id, or minilm)."
    )
  if cc.tokenizer == SYNTHETIC_TOKENIZER:
    tokenizer = arena.synthetic_tokenizer()
  else:
    tokenizer = load_tokenizer(resolve_checkpoint(cc.tokenizer or cc.init_from))
  overrides: dict[str, Any] = {"dtype": cc.dtype}
  if cc.dropout >= 0:
    overrides.update(hidden_dropout=cc.dropout, attention_dropout=cc.dropout)
  if cc.init_from == "scratch":
    enc_cfg = EncoderConfig(
      family=cc.family,
      vocab_size=tokenizer.get_vocab_size(),
      hidden_size=cc.hidden_size,
      num_layers=cc.num_layers,
      num_heads=cc.num_heads,
      intermediate_size=cc.intermediate_size,
      max_position_embeddings=cc.max_position_embeddings,
      pad_token_id=_pad_id(tokenizer),
      type_vocab_size=0 if cc.family == "distilbert" else 2,
      **overrides,
    )
    encoder = Encoder(enc_cfg, rngs=nnx.Rngs(params=seed))
  elif cc.freeze == RANDOM:
    encoder, enc_cfg = random_init.random_from_hf(
      resolve_checkpoint(cc.init_from), seed, **overrides
    )
  else:
    encoder, enc_cfg = from_hf(resolve_checkpoint(cc.init_from), **overrides)
    if not isinstance(encoder, Encoder):
      raise _not_an_encoder(cc.init_from)
  head = pc.HeadConfig(
    pooling=cc.pooling, diff_prod=cc.diff_prod, hidden=cc.head_hidden, dropout=cc.head_dropout
  )
  return pc.PairClassifier(encoder, head, rngs=nnx.Rngs(params=seed + 1)), tokenizer


def check_lengths(enc_cfg: EncoderConfig, tokenizer, ac) -> None:
  """Fails before encoding when the longest side cannot fit the encoder's positions."""
  specials = tokenizer.num_special_tokens_to_add(ac.prompt_max_tokens > 0)
  longest = ac.prompt_max_tokens + ac.response_max_tokens + specials
  if ac.max_length:
    longest = min(longest, ac.max_length)
  limit = enc_cfg.max_position_embeddings
  if enc_cfg.family == "roberta":
    limit -= enc_cfg.pad_token_id + 1
  if enc_cfg.absolute_positions and longest > limit:
    if ac.max_length:
      raise errors.ConfigError(
        f"arena.max_length={ac.max_length} exceeds the encoder's {limit} positions; set "
        f"--config.arena.max_length={limit} or less."
      )
    fit = limit - ac.prompt_max_tokens - specials
    raise errors.ConfigError(
      f"arena.prompt_max_tokens={ac.prompt_max_tokens} + arena.response_max_tokens="
      f"{ac.response_max_tokens} + {specials} special tokens = {longest} exceeds the "
      f"encoder's {limit} positions; set --config.arena.response_max_tokens={fit} or less."
    )
