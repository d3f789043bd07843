"""Loading, overriding, validating, documenting and persisting configs.

A config is an `ml_collections.ConfigDict` returned by `get_config(arg)` in a Python file
(`configs/shakespeare.py:cpu` passes "cpu" as `arg`). Validation compares it with
`llmjax.config_base.base_config()`: a key that is not in the base inside a known section
is a typo, reported with the closest valid key.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import pathlib
import re
from typing import Any

import ml_collections

from llmjax import config_base
from llmjax import errors

# Keys whose change makes an existing checkpoint unusable.
MODEL_SHAPE_KEYS = ("model.arch", "model.n_layer", "model.n_head", "model.n_embd",
                    "model.block_size", "model.vocab_size", "model.bias", "model.scan_layers",
                    "model.mlp_hidden")

_ASSIGNMENT = re.compile(r"^\s*c\.([A-Za-z_][\w.]*)\s*=\s*(.*?)\s+#\s?(.*)$")


ConfigError = errors.ConfigError


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads `path/to/file.py[:variant]` by calling its `get_config(variant)`."""
  path_str, _, arg = spec.partition(":")
  path = pathlib.Path(path_str)
  if not path.is_file():
    raise ConfigError(f"Config file {path_str!r} does not exist. Pass --config=configs/NAME.py"
                      f"[:variant]; available: {', '.join(available_configs())}")
  module_spec = importlib.util.spec_from_file_location(f"llmjax_config_{path.stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"Config file {path_str!r} defines no get_config(arg).")
  config = module.get_config(arg or None)
  config.lock()
  return config


def available_configs() -> list[str]:
  configs_dir = pathlib.Path(__file__).resolve().parent.parent / "configs"
  return sorted(f"configs/{p.name}" for p in configs_dir.glob("*.py") if p.stem != "__init__")


def flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
  """{'model.n_layer': 6, ...} for every leaf."""
  out = {}
  for key, value in config.items():
    name = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      out.update(flatten(value, name + "."))
    else:
      out[name] = value
  return out


def closest_key(name: str, valid: list[str]) -> str:
  matches = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
  if not matches:
    tail = name.rsplit(".", 1)[-1]
    matches = [k for k in valid if k.rsplit(".", 1)[-1] == tail] or [""]
  return matches[0]


def unknown_key_error(name: str, valid: list[str]) -> ConfigError:
  suggestion = closest_key(name, valid)
  hint = f" Did you mean {suggestion!r}?" if suggestion else ""
  return ConfigError(f"Unknown config key {name!r}.{hint} "
                     "List every key with --config_help.")


TOP_LEVEL_KEYS = ("name", "job")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for typos and impossible values before any work starts.

  The config must have exactly the keys of `config_base.schema()` plus those of the
  optional sections it holds, each of the declared type; then every range is checked."""
  sections = [k for k, v in config.items() if isinstance(v, ml_collections.ConfigDict)]
  base_sections = {k for k, v in config_base.base_config().items()
                   if isinstance(v, ml_collections.ConfigDict)}
  for name in sections:
    if name not in base_sections and name not in config_base.OPTIONAL_SECTIONS:
      known = sorted(base_sections | set(config_base.OPTIONAL_SECTIONS))
      raise ConfigError(f"Unknown config section {name!r}; the sections are "
                        f"{', '.join(known)} (llmjax/config_base.py).")
  schema = flatten(config_base.schema([s for s in sections if s not in base_sections]))
  flat = flatten(config)
  for name in flat:
    if name not in schema:
      raise unknown_key_error(name, list(schema))
  for name, default in schema.items():
    if name not in flat:
      raise ConfigError(f"Config is missing key {name!r}; start configs from "
                        "llmjax.config_base.schema().")
    value = flat[name]
    if isinstance(default, bool) != isinstance(value, bool) or (
        isinstance(default, (int, float)) and not isinstance(value, (int, float))) or (
            isinstance(default, str) and not isinstance(value, str)) or (
                isinstance(default, tuple) and not isinstance(value, (tuple, list))):
      raise ConfigError(f"Config key {name!r} must be {type(default).__name__}, "
                        f"got {value!r} ({type(value).__name__}).")
  _check_values(config)


def check_keys_read(job: str, reads: tuple[str, ...], ignores: tuple[str, ...],
                    keys) -> None:
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
          f"the sections {', '.join(reads)}" + (f" (except {', '.join(ignores)})"
                                                  if ignores else "") + ".")


def _check_values(c: ml_collections.ConfigDict) -> None:
  def require(ok: bool, key: str, msg: str):
    if not ok:
      raise ConfigError(f"{key}={flatten(c)[key]!r}: {msg}")

  for key in ("model.n_layer", "model.n_head", "model.n_embd", "model.block_size",
              "model.vocab_size", "train.steps", "train.batch_size", "train.grad_accum"):
    require(flatten(c)[key] > 0, key, "must be positive.")
  require(c.model.n_embd % c.model.n_head == 0, "model.n_embd",
          f"must be divisible by model.n_head={c.model.n_head}.")
  require(0.0 <= c.model.dropout < 1.0, "model.dropout", "must be in [0, 1).")
  require(c.train.batch_size % c.train.grad_accum == 0, "train.batch_size",
          f"must be divisible by train.grad_accum={c.train.grad_accum}.")
  require(c.model.dtype in ("float32", "bfloat16", "float16"), "model.dtype",
          "use float32 or bfloat16.")
  require(c.model.param_dtype in ("float32", "bfloat16"), "model.param_dtype",
          "use float32 or bfloat16.")
  require(c.model.remat in ("none", "full", "dots_saveable"), "model.remat",
          "use none, full or dots_saveable.")
  require(c.model.attention in ("auto", "xla", "cudnn"), "model.attention",
          "use auto, xla or cudnn.")
  require(0.0 <= c.data.val_fraction < 1.0, "data.val_fraction",
          "must be in [0, 1) (0 = train on the whole text and evaluate on it).")
  require(c.data.source in ("shakespeare", "file", "url", "hf", "wikitext2", "notes", "math")
          or c.data.source.startswith("notes"), "data.source",
          "use shakespeare, file, url or hf.")
  require(c.data.source not in ("file", "url", "hf") or bool(c.data.path), "data.source",
          "needs --config.data.path=... (a file path, URL or dataset id).")
  require(c.notes.variant in ("", "pre", "post", "blank", "none"), "notes.variant",
          "use '' (plain text), pre, post, blank or none.")
  for key in ("train.eval_every", "train.checkpoint_every", "train.patience",
              "optim.warmup_steps", "train.log_every", "mesh.num_devices"):
    require(flatten(c)[key] >= 0, key, "must be >= 0.")
  require(c.optim.learning_rate > 0, "optim.learning_rate", "must be positive.")
  require(c.train.memory_limit_gib >= 0, "train.memory_limit_gib", "must be >= 0.")
  _check_optional_sections(c, require)


def _check_optional_sections(c: ml_collections.ConfigDict, require) -> None:
  if "progressive" in c:
    fractions = [float(f) for f in c.progressive.stage_fractions]
    require(bool(fractions) and min(fractions) > 0 and abs(sum(fractions) - 1.0) < 1e-6,
            "progressive.stage_fractions", "must be positive and sum to 1, one per stage.")
    require(len(c.progressive.stage_groups) == len(fractions), "progressive.stage_groups",
            f"needs one entry per stage: progressive.stage_fractions has {len(fractions)}.")
  if "lora" in c:
    require(c.lora.rank > 0, "lora.rank", "must be positive.")
  if "classifier" in c:
    require(c.classifier.pooling in ("cls", "mean"), "classifier.pooling", "use cls or mean.")
    require(c.classifier.frozen_layers >= 0, "classifier.frozen_layers", "must be >= 0.")
  if "arena" in c:
    require(0.0 < c.arena.val_fraction < 1.0, "arena.val_fraction", "must be in (0, 1).")
    for key in ("arena.prompt_max_tokens", "arena.response_max_tokens"):
      require(flatten(c)[key] > 0, key, "must be positive.")
  if "experiment" in c:
    require(c.experiment.budget_unit in ("words", "tokens"), "experiment.budget_unit",
            "use 'words' or 'tokens'.")
    require(c.experiment.budget > 0, "experiment.budget", "must be positive.")
    require(len(c.experiment.seeds) > 0, "experiment.seeds", "needs at least one seed.")


def comments(path: str | pathlib.Path) -> dict[str, str]:
  """Maps 'section.key' to the trailing comment of its assignment in a config source."""
  out = {}
  for line in pathlib.Path(path).read_text().splitlines():
    match = _ASSIGNMENT.match(line)
    if match and not match.group(2).startswith("ml_collections"):
      out[match.group(1)] = match.group(3).strip()
  return out


def help_text(config: ml_collections.ConfigDict, config_path: str | None = None) -> str:
  """Every key with its value in `config` and its comment."""
  docs = comments(config_base.__file__)
  if config_path:
    docs.update({k: v for k, v in comments(config_path.partition(":")[0]).items() if k not in docs})
  flat = flatten(config)
  width = max(len(k) for k in flat)
  lines = []
  section = None
  for key, value in flat.items():
    head = key.split(".")[0]
    if head != section and "." in key:
      lines.append(f"\n[{head}]")
      section = head
    lines.append(f"  {key:<{width}}  = {value!r:<14}  {docs.get(key, '')}".rstrip())
  return "\n".join(lines).lstrip("\n")


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> None:
  """Sets dotted keys (`{'train.steps': 10}`), rejecting unknown keys with a suggestion."""
  valid = list(flatten(config))
  for name, value in overrides.items():
    name = name.replace("__", ".")
    if name not in valid:
      raise unknown_key_error(name, valid)
    *parents, leaf = name.split(".")
    node = config
    for part in parents:
      node = node[part]
    try:
      node[leaf] = value
    except TypeError as e:
      raise ConfigError(f"Config key {name!r}: {e}") from None


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def check_resume_compatible(saved: dict, config: ml_collections.ConfigDict) -> None:
  """Fails naming the first model-shape key that differs from the saved run."""
  saved_flat = flatten(ml_collections.ConfigDict(saved))
  now = flatten(config)
  for key in MODEL_SHAPE_KEYS:
    if key in saved_flat and key in now and saved_flat[key] != now[key]:
      raise ConfigError(
          f"The workdir holds a run with {key}={saved_flat[key]!r} but the config now says "
          f"{now[key]!r}. Use a new --workdir, or set {key}={saved_flat[key]!r} to resume.")


def parse_value(text: str) -> Any:
  """Parses a command-line value: Python literal if possible, else the string."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text
