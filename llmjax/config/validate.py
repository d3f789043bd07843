"""Validation: a config has exactly the declared keys, each of its declared type and range.

Validation compares a config with `llmjax.config.schema.base_config(arch)` for the config's
`model.arch`: a key that is not in the base inside a known section is a typo, reported with
the closest valid key; a model key the arch does not declare is refused the same way.
"""

from __future__ import annotations

import weakref

import ml_collections

from llmjax import models
from llmjax.config import schema as config_schema
from llmjax.config.load import flatten, unknown_key_error
from llmjax.data import registry
from llmjax.util.errors import ConfigError

MODEL_SHAPE_KEYS = (
  "model.arch",
  "model.n_layer",
  "model.n_head",
  "model.n_embd",
  "model.block_size",
  "model.vocab_size",
  "model.bias",
  "model.scan_layers",
  "model.mlp_hidden",
  "model.fan_in",
  "model.n_levels",
  "model.stage_groups",
  "model.lora_rank",
  "model.lora_targets",
)

TOP_LEVEL_KEYS = ("name", "job")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for typos and impossible values before any work starts.

  The config must have exactly the keys of `config_schema.schema()` plus those of the
  optional sections it holds, each of the declared type; then every range is checked."""
  sections = [k for k, v in config.items() if isinstance(v, ml_collections.ConfigDict)]
  base_sections = {
    k for k, v in config_schema.base_config().items() if isinstance(v, ml_collections.ConfigDict)
  }
  for name in sections:
    if name not in base_sections and name not in config_schema.OPTIONAL_SECTIONS:
      known = sorted(base_sections | set(config_schema.OPTIONAL_SECTIONS))
      raise ConfigError(
        f"Unknown config section {name!r}; the sections are "
        f"{', '.join(known)} (llmjax/config/schema.py)."
      )
  arch = config.model.get("arch", "gpt") if "model" in config else "gpt"
  models.config_class(arch)  # An unknown arch lists the available ones.
  optional = [s for s in sections if s not in base_sections]
  schema = flatten(config_schema.schema(optional, arch=arch))
  flat = flatten(config)
  for name in flat:
    if name not in schema:
      raise unknown_key_error(name, list(schema), arch)
  for name, default in schema.items():
    if name not in flat:
      raise ConfigError(
        f"Config is missing key {name!r}; start configs from llmjax.config.schema.schema()."
      )
    value = flat[name]
    if (
      isinstance(default, bool) != isinstance(value, bool)
      or (isinstance(default, (int, float)) and not isinstance(value, (int, float)))
      or (isinstance(default, str) and not isinstance(value, str))
      or (isinstance(default, tuple) and not isinstance(value, (tuple, list)))
    ):
      raise ConfigError(
        f"Config key {name!r} must be {type(default).__name__}, "
        f"got {value!r} ({type(value).__name__})."
      )
  _check_values(config)


def check_keys_read(job: str, reads: tuple[str, ...], ignores: tuple[str, ...], keys) -> None:
  """Refuses a key set by the user that job `job` never reads (so no setting is silently
  ignored); `reads` are the sections it reads, `ignores` single keys inside them it does
  not."""
  for key in keys:
    key = key.replace("__", ".")
    if key in TOP_LEVEL_KEYS:
      continue
    if key.split(".")[0] not in reads or key in ignores:
      raise ConfigError(
        f"{key} is set but config.job={job!r} never reads it; drop it. That job reads "
        f"the sections {', '.join(reads)}"
        + (f" (except {', '.join(ignores)})" if ignores else "")
        + "."
      )


def _check_values(c: ml_collections.ConfigDict) -> None:
  def require(ok: bool, key: str, msg: str):
    if not ok:
      raise ConfigError(f"{key}={flatten(c)[key]!r}: {msg}")

  _check_model(c.model, require)
  for key in ("train.steps", "train.batch_size", "train.grad_accum"):
    require(flatten(c)[key] > 0, key, "must be positive.")
  require(
    c.train.batch_size % c.train.grad_accum == 0,
    "train.batch_size",
    f"must be divisible by train.grad_accum={c.train.grad_accum}.",
  )
  registry.check_data(c.data)
  require(c.data.windows in ("grid", "lines"), "data.windows", "use grid or lines.")
  require(
    c.train.softmax_ids in ("all", "train"),
    "train.softmax_ids",
    "use all (every id) or train (the ids of the training split).",
  )
  require(
    c.notes.variant in ("", "pre", "post", "blank", "none"),
    "notes.variant",
    "use '' (plain text), pre, post, blank or none.",
  )
  for key in (
    "train.eval_every",
    "train.checkpoint_every",
    "train.patience",
    "optim.warmup_steps",
    "train.log_every",
    "mesh.num_devices",
  ):
    require(flatten(c)[key] >= 0, key, "must be >= 0.")
  require(c.optim.learning_rate > 0, "optim.learning_rate", "must be positive.")
  require(c.train.memory_limit_gib >= 0, "train.memory_limit_gib", "must be >= 0.")
  _check_optional_sections(c, require)


def _check_model(m: ml_collections.ConfigDict, require) -> None:
  """The keys the section's arch declares (each arch declares its own), then the arch's own
  checks (its config dataclass: e.g. conv_attention's block_size, progressive's stages)."""
  for key in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "lora_rank"):
    if key in m:
      require(m[key] > 0, f"model.{key}", "must be positive.")
  if "n_embd" in m and "n_head" in m:
    require(
      m.n_embd % m.n_head == 0, "model.n_embd", f"must be divisible by model.n_head={m.n_head}."
    )
  choices = {
    "dtype": ("float32", "bfloat16", "float16"),
    "param_dtype": ("float32", "bfloat16"),
    "remat": ("none", "full", "dots_saveable"),
    "attention": ("auto", "xla", "cudnn"),
  }
  for key, allowed in choices.items():
    if key in m:
      require(m[key] in allowed, f"model.{key}", f"use {', '.join(allowed)}.")
  if "dropout" in m:
    require(0.0 <= m.dropout < 1.0, "model.dropout", "must be in [0, 1).")
  models.model_config(m)


def _check_optional_sections(c: ml_collections.ConfigDict, require) -> None:
  if "progressive" in c:
    fractions = [float(f) for f in c.progressive.stage_fractions]
    require(
      bool(fractions) and min(fractions) > 0 and abs(sum(fractions) - 1.0) < 1e-6,
      "progressive.stage_fractions",
      "must be positive and sum to 1, one per stage.",
    )
    if "stage_groups" in c.model:
      require(
        len(c.model.stage_groups) == len(fractions),
        "model.stage_groups",
        f"needs one entry per stage: progressive.stage_fractions has {len(fractions)}.",
      )
  if "classifier" in c:
    require(c.classifier.pooling in ("cls", "mean"), "classifier.pooling", "use cls or mean.")
    require(c.classifier.frozen_layers >= 0, "classifier.frozen_layers", "must be >= 0.")
  if "arena" in c:
    require(0.0 < c.arena.val_fraction < 1.0, "arena.val_fraction", "must be in (0, 1).")
    require(
      c.arena.prompt_max_tokens >= 0,
      "arena.prompt_max_tokens",
      "must be >= 0 (0 = the response alone, the original's first run).",
    )
    require(c.arena.response_max_tokens > 0, "arena.response_max_tokens", "must be positive.")
  if "recite" in c:
    require(0.0 < c.recite.goal <= 1.0, "recite.goal", "must be in (0, 1].")
    require(0.0 < c.recite.tail <= 1.0, "recite.tail", "must be in (0, 1].")
  if "experiment" in c:
    require(
      c.experiment.budget_unit in ("words", "tokens"),
      "experiment.budget_unit",
      "use 'words' or 'tokens'.",
    )
    require(c.experiment.budget > 0, "experiment.budget", "must be positive.")
    require(len(c.experiment.seeds) > 0, "experiment.seeds", "needs at least one seed.")


def check_resume_compatible(saved: dict, config: ml_collections.ConfigDict) -> None:
  """Fails naming the first model-shape key that differs from the saved run."""
  saved_flat = flatten(ml_collections.ConfigDict(saved))
  now = flatten(config)

  def same(a, b):  # config.json holds tuples as lists.
    return (tuple(a) if isinstance(a, list) else a) == (tuple(b) if isinstance(b, list) else b)

  for key in MODEL_SHAPE_KEYS:
    if key in saved_flat and key in now and not same(saved_flat[key], now[key]):
      raise ConfigError(
        f"The workdir holds a run with {key}={saved_flat[key]!r} but the config now says "
        f"{now[key]!r}. Use a new --workdir, or set {key}={saved_flat[key]!r} to resume."
      )


# id(config) -> (weak reference, flattened contents) of every config `validated` passed.
_VALIDATED: dict[int, tuple[weakref.ref, str]] = {}


def validated(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`validate(config)` once per run: a run's entry point (the command line, `Trainer`)
  validates the config and the runner it hands it to does not again, unless the config
  was changed since. Returns `config`."""
  key, contents = id(config), repr(flatten(config))
  seen = _VALIDATED.get(key)
  if seen is not None and seen[0]() is config and seen[1] == contents:
    return config
  validate(config)
  _VALIDATED[key] = (weakref.ref(config, lambda _, key=key: _VALIDATED.pop(key, None)), contents)
  return config
