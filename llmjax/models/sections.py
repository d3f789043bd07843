"""Model config dataclasses <-> `model` config sections.

Each architecture's config is a frozen dataclass in its model file, registered under its
`model.arch` name in `llmjax.models`. Each field is one key of the `model` section, and the
comment after the field is that key's help text (`--config_help`). This module turns a
section into the dataclass (every key must be a field: none is dropped) and the dataclass
into the section's defaults and comments.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
from typing import Any

import jax.numpy as jnp

from llmjax.util import errors

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
DTYPE_KEYS = ("dtype", "param_dtype")
# `name: type = default  # comment` inside a class body.
_FIELD = re.compile(r"^\s+([A-Za-z_]\w*)\s*:[^=]*=.*?\s#\s?(.*)$")


def field_names(cls) -> list[str]:
  """The section keys of config dataclass `cls`, in declaration order (`arch` aside)."""
  return [f.name for f in dataclasses.fields(cls) if f.init]


def undeclared_key_error(key: str, arch: str, names, owners=()) -> errors.ConfigError:
  """`model.KEY` is not a field of `arch`'s config: one line naming the closest key it has
  (and the architectures that do declare KEY, if any)."""
  elsewhere = f" (a key of {', '.join(owners)} only)" if owners else ""
  near = difflib.get_close_matches(key, list(names), n=1, cutoff=0.0)
  hint = f" The closest it has is 'model.{near[0]}'." if near else ""
  return errors.ConfigError(
    f"model.{key} is not a key of model.arch={arch!r}{elsewhere}.{hint} "
    "List every key with --config_help."
  )


def from_section(cls, section, owners=lambda key: ()):
  """`cls` from a `model` section (a ConfigDict or dict; `arch` is skipped): a key that is
  not a field is refused, dtype names become dtypes and lists (from JSON) tuples.
  `owners(key)` names the architectures that declare a refused key, for the message."""
  kw = {k: v for k, v in dict(section).items() if k != "arch"}
  names = field_names(cls)
  for key in kw:
    if key not in names:
      raise undeclared_key_error(key, cls.ARCH, names, owners(key))
  tuples = {f.name for f in dataclasses.fields(cls) if isinstance(f.default, tuple)}
  for key, value in kw.items():
    if key in DTYPE_KEYS and isinstance(value, str):
      if value not in DTYPES:
        raise errors.ConfigError(f"model.{key}={value!r}: use one of {', '.join(DTYPES)}.")
      kw[key] = DTYPES[value]
    elif key in tuples and isinstance(value, list):
      kw[key] = tuple(value)
  return cls(**kw)


def _plain(value: Any) -> Any:
  """A field default as a config value: dtypes by name."""
  for name, dtype in DTYPES.items():
    if value is dtype:
      return name
  return value


def defaults(cls) -> dict[str, Any]:
  """{key: default} of config dataclass `cls`, in declaration order."""
  return {f.name: _plain(f.default) for f in dataclasses.fields(cls) if f.init}


def comments(cls) -> dict[str, str]:
  """{key: the comment after its field} over `cls` and the dataclasses it extends (a
  subclass's comment wins)."""
  out: dict[str, str] = {}
  for klass in reversed(cls.__mro__):
    if not dataclasses.is_dataclass(klass):
      continue
    for line in inspect.getsource(klass).splitlines():
      match = _FIELD.match(line)
      if match:
        out[match.group(1)] = match.group(2).strip()
  names = field_names(cls)
  return {k: out[k] for k in names if k in out}
