"""Help text: every config key with its value and the comment that declares it (in
`config/schema.py`, or after the field of the model's config dataclass for `model` keys)."""

from __future__ import annotations

import pathlib
import re

import ml_collections

from llmjax import models
from llmjax.config import schema as config_schema
from llmjax.config.load import flatten

_ASSIGNMENT = re.compile(r"^\s*c\.([A-Za-z_][\w.]*)\s*=\s*(.*?)\s+#\s?(.*)$")


def comments(path: str | pathlib.Path) -> dict[str, str]:
  """Maps 'section.key' to the trailing comment of its assignment in a config source."""
  out = {}
  for line in pathlib.Path(path).read_text().splitlines():
    match = _ASSIGNMENT.match(line)
    if match and not match.group(2).startswith("ml_collections"):
      out[match.group(1)] = match.group(3).strip()
  return out


def key_comments(config: ml_collections.ConfigDict) -> dict[str, str]:
  """'section.key' -> help text for the keys of `config`'s schema: the schema's comments,
  and for `model` keys the comments of the fields of `model.arch`'s config dataclass."""
  docs = comments(config_schema.__file__)
  arch = config.model.get("arch", "gpt") if "model" in config else None
  if arch in models.REGISTRY:
    docs.update({f"model.{k}": v for k, v in models.comments(arch).items()})
  return docs


def help_text(config: ml_collections.ConfigDict, config_path: str | None = None) -> str:
  """Every key with its value in `config` and its comment."""
  docs = key_comments(config)
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
