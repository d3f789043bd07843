"""Encoders of a checkpoint's architecture with random weights (`classifier.freeze=random`).

Only the checkpoint's config.json is read; the weights are drawn the way `transformers`
initialises a model built from its config alone, so a run from these weights measures
what pre-training adds.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
from flax import nnx

from llmjax.models.encoder import Encoder, EncoderConfig
from llmjax.pretrained.hf_import import (
  CONFIG,
  encoder_config_from_hf,
  read_config,
  resolve_model_dir,
)
from llmjax.util import errors


def init_like_hf(encoder: Encoder, seed: int, std: float = 0.02) -> Encoder:
  """`encoder` re-initialised the way `transformers` initialises a model built from its
  config alone (`AutoModel.from_config`): every matrix and embedding table N(0, std^2)
  (std = config.json's `initializer_range`), the padding row of the word table zero,
  biases zero, LayerNorm scales one. Seeded: the same seed gives the same weights."""
  graphdef, state = nnx.split(encoder)
  leaves = []
  for i, (path, var) in enumerate(nnx.to_flat_state(state)):
    leaf = str(path[-1])
    if leaf in ("kernel", "embedding"):
      # numpy draws: no device compilation per parameter shape.
      new = std * np.random.default_rng([seed, i]).standard_normal(var.shape, np.float32)
      if tuple(map(str, path)) == ("embed", "word", "embedding"):
        new[encoder.cfg.pad_token_id] = 0.0
    else:
      new = np.full(var.shape, 1.0 if leaf == "scale" else 0.0, np.float32)
    leaves.append((path, var.replace(jnp.asarray(new, dtype=var.dtype))))
  return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def random_from_hf(
  path_or_repo_id: str | os.PathLike, seed: int, **overrides
) -> tuple[Encoder, EncoderConfig]:
  """An encoder of the checkpoint's architecture with seeded random weights.

  Only config.json is read (downloaded alone for a hub id); no weight file is opened.
  Initialisation as `init_like_hf`. Overrides as for `from_hf`.
  """
  model_dir = resolve_model_dir(path_or_repo_id, [CONFIG])
  hf_config = read_config(model_dir)
  if hf_config.get("model_type") == "gpt2":
    raise errors.ConfigError(
      f"{path_or_repo_id!s} is a GPT-2 checkpoint, not an encoder "
      "(BERT, DistilBERT, RoBERTa, ELECTRA, ALBERT, DeBERTa v1/v2/v3)"
    )
  cfg = encoder_config_from_hf(hf_config, **overrides)
  encoder = nnx.eval_shape(lambda: Encoder(cfg, rngs=nnx.Rngs(0)))
  return init_like_hf(encoder, seed, float(hf_config.get("initializer_range", 0.02))), cfg
