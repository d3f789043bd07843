"""Loading configs from Python files, overriding keys and serialising them.

A config is an `ml_collections.ConfigDict` returned by `get_config(arg)` in a Python file
(`configs/shakespeare.py:cpu` passes "cpu" as `arg`).
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import pathlib
from typing import Any

import ml_collections

from llmjax import models
from llmjax.util.errors import ConfigError


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads `path/to/file.py[:variant]` by calling its `get_config(variant)`."""
  path_str, _, arg = spec.partition(":")
  path = pathlib.Path(path_str)
  if not path.is_file():
    raise ConfigError(
      f"Config file {path_str!r} does not exist. Pass --config=configs/NAME.py"
      f"[:variant]; available: {', '.join(available_configs())}"
    )
  module_spec = importlib.util.spec_from_file_location(f"llmjax_config_{path.stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"Config file {path_str!r} defines no get_config(arg).")
  config = module.get_config(arg or None)
  config.lock()
  return config


def available_configs() -> list[str]:
  configs_dir = pathlib.Path(__file__).resolve().parents[2] / "configs"
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


def unknown_key_error(name: str, valid: list[str], arch: str | None = None) -> ConfigError:
  """One line naming the closest valid key; a `model` key that another architecture
  declares says so (each arch's `model` section holds only its own keys)."""
  section, _, key = name.partition(".")
  if section == "model" and arch in models.REGISTRY and models.owners(key):
    return models.undeclared_key_error(key, arch)
  suggestion = closest_key(name, valid)
  hint = f" Did you mean {suggestion!r}?" if suggestion else ""
  return ConfigError(f"Unknown config key {name!r}.{hint} List every key with --config_help.")


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> None:
  """Sets dotted keys (`{'train.steps': 10}`), rejecting unknown keys with a suggestion."""
  valid = list(flatten(config))
  for name, value in overrides.items():
    name = name.replace("__", ".")
    if name not in valid:
      arch = config.model.get("arch", "gpt") if "model" in config else None
      raise unknown_key_error(name, valid, arch)
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


def parse_value(text: str) -> Any:
  """Parses a command-line value: Python literal if possible, else the string."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text
