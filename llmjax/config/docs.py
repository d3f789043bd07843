"""Help text: every config key with its value and the comment that declares it."""

from __future__ import annotations

import pathlib
import re

import ml_collections

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


def help_text(config: ml_collections.ConfigDict, config_path: str | None = None) -> str:
  """Every key with its value in `config` and its comment."""
  docs = comments(config_schema.__file__)
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
