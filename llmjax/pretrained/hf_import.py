"""Builds Flax NNX models from Hugging Face checkpoints (config.json + weights).

    model, cfg = from_hf("tests/goldens/bert")              # a local directory
    model, cfg = from_hf("microsoft/deberta-v3-small")      # through huggingface_hub
    model, cfg = from_hf(path, dtype=jnp.bfloat16)          # EncoderConfig overrides
    model, cfg = from_hf("gpt2-xl", scan_layers=True)       # GPT-2: an llmjax GPT
    model, cfg = from_hf("gpt2@607a30d783dfa663caf39e06633721c8d4cfcd7e")  # pinned revision

A hub id may end in `@REVISION` (a commit hash, tag or branch; the same as `revision=`), so
a config value such as `model.init_from` carries the pin and the run's saved config records
it. Without a pin the hub's current main is downloaded; `hub_revision(model_dir)` names the
commit a downloaded snapshot came from.

Encoders (BERT, DistilBERT, RoBERTa, ELECTRA, ALBERT, DeBERTa v1/v2/v3) become
`llmjax.models.encoder.Encoder`s; GPT-2 checkpoints become `llmjax.models.gpt.GPT`s
(see `llmjax.pretrained.gpt2`).

Only numpy, safetensors and huggingface_hub are used: neither torch nor transformers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from llmjax.models.encoder import Encoder, EncoderConfig
from llmjax.pretrained import gpt2, weights
from llmjax.util import errors

CONFIG = "config.json"
_WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
# Non-persistent buffers that old checkpoints still carry.
_BUFFER_SUFFIXES = ("position_ids", "token_type_ids")


def _bert_like(family: str, c: dict[str, Any], defaults: dict[str, Any]) -> EncoderConfig:
  g = lambda key: c.get(key, defaults.get(key))  # noqa: E731
  if c.get("position_embedding_type", "absolute") != "absolute":
    raise ValueError(
      f"position_embedding_type={c['position_embedding_type']!r} is not supported;"
      " only 'absolute' position embeddings are"
    )
  return EncoderConfig(
    family=family,
    vocab_size=g("vocab_size"),
    hidden_size=g("hidden_size"),
    num_layers=g("num_hidden_layers"),
    num_heads=g("num_attention_heads"),
    intermediate_size=g("intermediate_size"),
    activation=g("hidden_act"),
    layer_norm_eps=g("layer_norm_eps"),
    max_position_embeddings=g("max_position_embeddings"),
    type_vocab_size=g("type_vocab_size"),
    pad_token_id=g("pad_token_id"),
    embedding_size=g("embedding_size"),
    hidden_dropout=g("hidden_dropout_prob"),
    attention_dropout=g("attention_probs_dropout_prob"),
  )


_BERT_DEFAULTS = dict(
  vocab_size=30522,
  hidden_size=768,
  num_hidden_layers=12,
  num_attention_heads=12,
  intermediate_size=3072,
  hidden_act="gelu",
  layer_norm_eps=1e-12,
  max_position_embeddings=512,
  type_vocab_size=2,
  pad_token_id=0,
  hidden_dropout_prob=0.1,
  attention_probs_dropout_prob=0.1,
)


def _bert(c):
  return _bert_like("bert", c, _BERT_DEFAULTS)


def _roberta(c):
  return _bert_like("roberta", c, {**_BERT_DEFAULTS, "vocab_size": 50265, "pad_token_id": 1})


def _electra(c):
  return _bert_like(
    "electra",
    c,
    {
      **_BERT_DEFAULTS,
      "embedding_size": 128,
      "hidden_size": 256,
      "num_attention_heads": 4,
      "intermediate_size": 1024,
    },
  )


def _albert(c):
  d = {
    **_BERT_DEFAULTS,
    "vocab_size": 30000,
    "embedding_size": 128,
    "hidden_size": 4096,
    "num_attention_heads": 64,
    "intermediate_size": 16384,
    "hidden_act": "gelu_new",
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
  }
  cfg = _bert_like("albert", c, d)
  return dataclasses.replace(
    cfg,
    num_layer_groups=c.get("num_hidden_groups", 1),
    inner_group_size=c.get("inner_group_num", 1),
  )


def _distilbert(c):
  return EncoderConfig(
    family="distilbert",
    vocab_size=c.get("vocab_size", 30522),
    hidden_size=c.get("dim", 768),
    num_layers=c.get("n_layers", 6),
    num_heads=c.get("n_heads", 12),
    intermediate_size=c.get("hidden_dim", 3072),
    activation=c.get("activation", "gelu"),
    layer_norm_eps=1e-12,
    max_position_embeddings=c.get("max_position_embeddings", 512),
    type_vocab_size=0,
    pad_token_id=c.get("pad_token_id", 0),
    hidden_dropout=c.get("dropout", 0.1),
    attention_dropout=c.get("attention_dropout", 0.1),
  )


def _deberta_fields(c, *, vocab, hidden, layers, heads, intermediate) -> dict[str, Any]:
  """The EncoderConfig fields DeBERTa v1 and v2 read alike (defaults differ per version)."""
  pos_att_type = c.get("pos_att_type") or []
  if isinstance(pos_att_type, str):
    pos_att_type = [x.strip() for x in pos_att_type.lower().split("|")]
  unsupported = sorted(set(pos_att_type) - {"c2p", "p2c", ""})
  if unsupported:
    raise ValueError(
      f"pos_att_type {unsupported} in config.json is not supported; only 'c2p' and 'p2c' are"
    )
  return dict(
    vocab_size=c.get("vocab_size", vocab),
    hidden_size=c.get("hidden_size", hidden),
    num_layers=c.get("num_hidden_layers", layers),
    num_heads=c.get("num_attention_heads", heads),
    intermediate_size=c.get("intermediate_size", intermediate),
    activation=c.get("hidden_act", "gelu"),
    layer_norm_eps=c.get("layer_norm_eps", 1e-7),
    embedding_size=c.get("embedding_size"),
    max_position_embeddings=c.get("max_position_embeddings", 512),
    absolute_positions=c.get("position_biased_input", True),
    type_vocab_size=c.get("type_vocab_size", 0),
    pad_token_id=c.get("pad_token_id", 0),
    relative_attention=c.get("relative_attention", False),
    pos_att_type=tuple(t for t in pos_att_type if t),
    max_relative_positions=c.get("max_relative_positions", -1),
    hidden_dropout=c.get("hidden_dropout_prob", 0.1),
    attention_dropout=c.get("attention_probs_dropout_prob", 0.1),
  )


def _deberta(c):
  """DeBERTa v1 (`model_type` deberta): plain relative distances, no convolution."""
  if c.get("talking_head", False):
    raise ValueError(
      "talking_head=true in config.json is not supported (DeBERTa v1 "
      "checkpoints on the hub use talking_head=false)"
    )
  return EncoderConfig(
    family="deberta",
    **_deberta_fields(c, vocab=50265, hidden=768, layers=12, heads=12, intermediate=3072),
  )


def _deberta_v2(c):
  norm_rel = [x.strip() for x in c.get("norm_rel_ebd", "none").lower().split("|")]
  return EncoderConfig(
    family="deberta-v2",
    **_deberta_fields(c, vocab=128100, hidden=1536, layers=24, heads=24, intermediate=6144),
    position_buckets=c.get("position_buckets", -1),
    share_att_key=c.get("share_att_key", False),
    norm_rel_embeddings="layer_norm" in norm_rel,
    conv_kernel_size=c.get("conv_kernel_size", 0),
    conv_groups=c.get("conv_groups", 1),
    conv_activation=c.get("conv_act", "tanh"),
  )


CONFIG_CONVERTERS: dict[str, Callable[[dict[str, Any]], EncoderConfig]] = {
  "bert": _bert,
  "roberta": _roberta,
  "electra": _electra,
  "albert": _albert,
  "distilbert": _distilbert,
  "deberta": _deberta,
  "deberta-v2": _deberta_v2,
}


def encoder_config_from_hf(hf_config: dict[str, Any], **overrides) -> EncoderConfig:
  """Converts a parsed config.json into an EncoderConfig, then applies overrides."""
  model_type = hf_config.get("model_type")
  if model_type not in CONFIG_CONVERTERS:
    raise ValueError(
      f"unsupported model_type {model_type!r} in config.json; supported:"
      f" {sorted(CONFIG_CONVERTERS) + ['gpt2']}"
    )
  cfg = CONFIG_CONVERTERS[model_type](hf_config)
  fields = {f.name for f in dataclasses.fields(EncoderConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise TypeError(f"unknown EncoderConfig override(s) {unknown}; fields are {sorted(fields)}")
  return dataclasses.replace(cfg, **overrides)


def hf_module_names(cfg: EncoderConfig) -> dict[str, str]:
  """Maps each parameterised submodule of `Encoder(cfg)` to its Hugging Face module name."""
  f = cfg.family
  names = {
    "embed.word": "embeddings.word_embeddings",
    "embed.position": "embeddings.position_embeddings",
    "embed.token_type": "embeddings.token_type_embeddings",
    "embed.norm": "embeddings.LayerNorm",
    "embed.proj": {
      "electra": "embeddings_project",
      "albert": "encoder.embedding_hidden_mapping_in",
      "deberta": "embeddings.embed_proj",
      "deberta-v2": "embeddings.embed_proj",
    }.get(f, ""),
  }
  if f == "distilbert":
    sub = {
      "attn.query": "attention.q_lin",
      "attn.key": "attention.k_lin",
      "attn.value": "attention.v_lin",
      "attn.out": "attention.out_lin",
      "attn_norm": "sa_layer_norm",
      "ffn_in": "ffn.lin1",
      "ffn_out": "ffn.lin2",
      "ffn_norm": "output_layer_norm",
    }
  elif f == "albert":
    sub = {
      "attn.query": "attention.query",
      "attn.key": "attention.key",
      "attn.value": "attention.value",
      "attn.out": "attention.dense",
      "attn_norm": "attention.LayerNorm",
      "ffn_in": "ffn",
      "ffn_out": "ffn_output",
      "ffn_norm": "full_layer_layer_norm",
    }
  else:
    # DeBERTa v1's fused in_proj is split into query_proj / key_proj / value_proj on load.
    proj = "_proj" if cfg.is_deberta else ""
    v1 = f == "deberta"
    sub = {
      "attn.query": f"attention.self.query{proj}",
      "attn.key": f"attention.self.key{proj}",
      "attn.value": f"attention.self.value{proj}",
      "attn.out": "attention.output.dense",
      "attn_norm": "attention.output.LayerNorm",
      "ffn_in": "intermediate.dense",
      "ffn_out": "output.dense",
      "ffn_norm": "output.LayerNorm",
      "attn.pos_key": "attention.self." + ("pos_proj" if v1 else "pos_key_proj"),
      "attn.pos_query": "attention.self." + ("pos_q_proj" if v1 else "pos_query_proj"),
    }
  for i in range(cfg.num_stored_layers):
    if f == "albert":
      group, inner = divmod(i, cfg.inner_group_size)
      layer = f"encoder.albert_layer_groups.{group}.albert_layers.{inner}"
    elif f == "distilbert":
      layer = f"transformer.layer.{i}"
    else:
      layer = f"encoder.layer.{i}"
    names.update({f"layers.{i}.{ours}": f"{layer}.{theirs}" for ours, theirs in sub.items()})
  names.update(
    {
      "rel_embed": "encoder.rel_embeddings",
      "rel_norm": "encoder.LayerNorm",
      "conv.conv": "encoder.conv.conv",
      "conv.norm": "encoder.conv.LayerNorm",
    }
  )
  return names


_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}


def _normalise_names(
  tensors: dict[str, np.ndarray], source: str
) -> tuple[dict[str, np.ndarray], list[str]]:
  """Strips the task-model prefix (`bert.`, `electra.`, ...) and legacy gamma/beta names.

  Returns the renamed encoder tensors and the names outside the encoder's prefix.
  """
  found = [k for k in tensors if k == _WORD_EMBEDDINGS or k.endswith("." + _WORD_EMBEDDINGS)]
  if not found:
    raise KeyError(
      f"{source} has no tensor named '[prefix.]{_WORD_EMBEDDINGS}'; is it an"
      f" encoder checkpoint? First names: {sorted(tensors)[:8]}"
    )
  if len(found) > 1:
    raise KeyError(f"{source} holds several encoders ({found}); extract one first")
  prefix = found[0][: -len(_WORD_EMBEDDINGS)]
  out, outside = {}, []
  for name, value in tensors.items():
    if not name.startswith(prefix):
      outside.append(name)
      continue
    name = name[len(prefix) :]
    if name.endswith(".gamma"):
      name = name[: -len("gamma")] + "weight"
    elif name.endswith(".beta"):
      name = name[: -len("beta")] + "bias"
    out[name] = value
  return out, outside


_IN_PROJ = "attention.self.in_proj.weight"


def split_deberta_in_proj(
  tensors: dict[str, np.ndarray], num_heads: int, source: str = "checkpoint"
) -> dict[str, np.ndarray]:
  """DeBERTa v1's fused attention weights as separate query / key / value tensors.

  `in_proj.weight` ((3 H K) x D) holds, for each head in turn, K query rows, K key rows
  and K value rows; `q_bias` and `v_bias` are the query and value biases (the key has
  none). Returns a copy of `tensors` with these replaced by `query_proj.{weight,bias}`,
  `key_proj.weight` and `value_proj.{weight,bias}`.
  """
  out = dict(tensors)
  for name in [k for k in tensors if k.endswith(_IN_PROJ)]:
    stem = name[: -len("in_proj.weight")]
    fused = out.pop(name)
    rows, width = fused.shape
    if rows % (3 * num_heads):
      raise ValueError(
        f"tensor {name!r} in {source} has {rows} rows, not a multiple of 3 x "
        f"num_attention_heads={num_heads}; does config.json belong to these "
        "weights?"
      )
    per_head_HxQKVxKxD = fused.reshape(num_heads, 3, rows // (3 * num_heads), width)
    for j, part in enumerate(("query_proj", "key_proj", "value_proj")):
      out[f"{stem}{part}.weight"] = per_head_HxQKVxKxD[:, j].reshape(-1, width)
    for bias, part in (("q_bias", "query_proj"), ("v_bias", "value_proj")):
      if stem + bias in out:
        out[f"{stem}{part}.bias"] = out.pop(stem + bias)
  return out


def _convert(leaf: str, value: np.ndarray, target_ndim: int) -> np.ndarray:
  if leaf == "kernel" and value.ndim == 2:  # torch Linear: out x in
    return value.T
  if leaf == "kernel" and value.ndim == 3 and target_ndim == 3:  # torch Conv1d: out x in x k
    return value.transpose(2, 1, 0)
  return value


def load_encoder_weights(
  model: Encoder, tensors: dict[str, np.ndarray], source: str = "checkpoint"
) -> Encoder:
  """Returns `model` with every parameter replaced by the matching checkpoint tensor."""
  cfg = model.cfg
  tensors, outside = _normalise_names(tensors, source)
  if cfg.family == "deberta":
    tensors = split_deberta_in_proj(tensors, cfg.num_heads, source)
  module_names = hf_module_names(cfg)
  graphdef, state = nnx.split(model)
  used, leaves = set(), []
  for path, var in nnx.to_flat_state(state):
    ours = ".".join(str(p) for p in path[:-1])
    leaf = str(path[-1])
    if ours not in module_names or leaf not in _LEAF_NAMES:
      raise KeyError(f"no checkpoint name known for parameter {'.'.join(map(str, path))}")
    name = f"{module_names[ours]}.{_LEAF_NAMES[leaf]}"
    if name not in tensors:
      near = sorted(k for k in tensors if k.startswith(module_names[ours].rsplit(".", 1)[0]))
      raise KeyError(
        f"{source} lacks tensor {name!r} (for {'.'.join(map(str, path))});"
        f" nearby names: {near[:10]}"
      )
    value = _convert(leaf, tensors[name], len(var.shape))
    if tuple(value.shape) != tuple(var.shape):
      # Kernels are stored transposed (Linear) or axis-reversed (Conv1d).
      implied = tuple(reversed(var.shape)) if leaf == "kernel" else tuple(var.shape)
      raise ValueError(
        f"tensor {name!r} in {source} has shape {tuple(tensors[name].shape)}, but"
        f" config.json implies {implied}; does config.json belong to these"
        " weights?"
      )
    used.add(name)
    leaves.append((path, var.replace(jnp.asarray(value, dtype=var.get_value().dtype))))
  unused = [k for k in tensors if k not in used and not k.endswith(_BUFFER_SUFFIXES)] + outside
  if unused:
    logging.info(
      "%s: %d tensors outside the encoder body (task heads, pooler) left unused: %s",
      source,
      len(unused),
      unused[:10],
    )
  return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def split_revision(spec: str) -> tuple[str, str | None]:
  """(`repo_id`, `revision`) of a hub spec `repo_id[@revision]` (revision None if absent)."""
  repo_id, sep, revision = str(spec).partition("@")
  if sep and (not repo_id or not revision):
    raise errors.PretrainedNotFoundError(
      f"{spec!r}: give a hub id as REPO or REPO@REVISION (a commit hash, tag or branch)"
    )
  return repo_id, (revision if sep else None)


def hub_revision(model_dir: str | os.PathLike) -> str | None:
  """The commit a hub snapshot directory (`.../snapshots/<commit>`) holds, else None."""
  path = pathlib.Path(model_dir)
  name = path.name
  if (
    path.parent.name == "snapshots"
    and len(name) == 40
    and all(c in "0123456789abcdef" for c in name)
  ):
    return name
  return None


def resolve_model_dir(
  path_or_repo_id: str | os.PathLike,
  allow_patterns: list[str] | None = None,
  revision: str | None = None,
) -> pathlib.Path:
  """A local checkpoint directory, downloading `path_or_repo_id` from the hub if needed.

  A hub id is `REPO` or `REPO@REVISION`; `revision` (a commit hash, tag or branch) pins the
  download the same way and must agree with an `@REVISION` in the id.
  """
  path = pathlib.Path(path_or_repo_id).expanduser()
  if path.is_dir():
    return path
  text = str(path_or_repo_id)
  repo_id, pinned = split_revision(text) if not path.exists() else (text, None)
  if pinned and revision and pinned != revision:
    raise errors.PretrainedNotFoundError(
      f"{text!r} pins revision {pinned!r} but revision={revision!r} was also given; give one"
    )
  revision = revision or pinned
  looks_local = path.exists() or repo_id.startswith((".", "/", "~")) or repo_id.count("/") > 1
  if looks_local:
    raise errors.PretrainedNotFoundError(
      f"checkpoint directory {text!r} does not exist (or is not a directory); pass a "
      "directory holding config.json and weights"
    )
  import huggingface_hub  # Imported here: huggingface_hub (only hub downloads need it).

  kwargs = {"revision": revision} if revision else {}
  try:
    return pathlib.Path(
      huggingface_hub.snapshot_download(repo_id, allow_patterns=allow_patterns, **kwargs)
    )
  except Exception as e:  # the hub raises many types: offline, gated, missing repo
    raise errors.PretrainedNotFoundError(
      f"{text!r} is neither a local directory nor a downloadable hub repository ({e}); pass a"
      " local directory holding config.json and model.safetensors"
    ) from e


def download_patterns() -> list[str]:
  return [
    CONFIG,
    weights.SAFETENSORS,
    weights.SAFETENSORS_INDEX,
    "model-*.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
  ]


def read_config(model_dir: pathlib.Path) -> dict[str, Any]:
  path = model_dir / CONFIG
  if not path.is_file():
    raise FileNotFoundError(
      f"{model_dir} has no {CONFIG}; a Hugging Face checkpoint directory"
      " needs one beside its weights"
    )
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from e


def from_hf(
  path_or_repo_id: str | os.PathLike, *, revision: str | None = None, **overrides
) -> tuple[Any, Any]:
  """Loads a pretrained encoder or GPT-2.

  Args:
    path_or_repo_id: a directory with config.json and model.safetensors (or
      pytorch_model.bin), or a Hugging Face hub repository id (`REPO` or
      `REPO@REVISION`).
    revision: the hub commit hash, tag or branch to download (None: the id's `@REVISION`,
      else main). The PyTorch fallback below is fetched from the same commit.
    **overrides: config fields to change: EncoderConfig fields for encoders (e.g.
      dtype=jnp.bfloat16, hidden_dropout=0.0), GPTConfig fields for GPT-2 (dtype,
      param_dtype, scan_layers, remat, dropout, attention, a smaller block_size).

  Returns:
    (module, config): an Encoder and its EncoderConfig, or a GPT and its GPTConfig.
  """
  model_dir = resolve_model_dir(path_or_repo_id, download_patterns(), revision)
  hf_config = read_config(model_dir)
  is_gpt2 = hf_config.get("model_type") == "gpt2"
  if is_gpt2:
    gpt2.config_from_hf(hf_config, **overrides)  # Fail on bad options before reading weights.
  else:
    cfg = encoder_config_from_hf(hf_config, **overrides)
  try:
    files = weights.checkpoint_files(model_dir)
  except FileNotFoundError:
    if model_dir == pathlib.Path(path_or_repo_id).expanduser():
      raise
    # The hub repository has no safetensors: fetch the PyTorch file (read with bounds
    # checks, see `weights`) from the same commit as the config.
    same_commit = hub_revision(model_dir) or revision
    model_dir = resolve_model_dir(
      split_revision(str(path_or_repo_id))[0], [CONFIG, weights.TORCH_BIN], same_commit
    )
    files = weights.checkpoint_files(model_dir)
  tensors = weights.load_tensors(model_dir)
  if is_gpt2:
    return gpt2.load(model_dir, hf_config, tensors, ", ".join(str(f) for f in files), **overrides)
  abstract = nnx.eval_shape(lambda: Encoder(cfg, rngs=nnx.Rngs(0)))
  model = load_encoder_weights(abstract, tensors, source=", ".join(str(f) for f in files))
  return model, cfg
