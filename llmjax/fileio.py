"""Atomic file writes: a reader sees the old file or the new one, never a torn one."""

from __future__ import annotations

import json
import os
import pathlib


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> pathlib.Path:
  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
  tmp.write_bytes(data)
  os.replace(tmp, path)
  return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> pathlib.Path:
  return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj) -> pathlib.Path:
  return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
