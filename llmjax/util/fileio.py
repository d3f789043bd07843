"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Each writer fills a temporary sibling of the target (same directory, so the same file
system) and renames it into place with `os.replace`; a failure removes the temporary
file and leaves the target as it was. Files get mode 0o644, directories 0o755.

Durability: the new file (for a directory, every file in it and the directory itself) is
`fsync`ed before the rename and the parent directory after it, so a power loss leaves the
old file or the whole new one, never a renamed but empty one.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

PathLike = str | os.PathLike[str]


def fsync_path(path: PathLike) -> None:
  """Flushes a file's or a directory's data and metadata to the disk."""
  fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0))
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _fsync_tree(root: pathlib.Path) -> None:
  """fsync of every file and directory under `root`, `root` last."""
  for parent, _, files in os.walk(root, topdown=False):
    for name in files:
      fsync_path(os.path.join(parent, name))
    fsync_path(parent)


@contextlib.contextmanager
def _replacing(path: pathlib.Path, prefix: str, suffix: str) -> Iterator[tuple[int, str]]:
  """(fd, name) of a temporary sibling of `path`, moved onto `path` (mode 0o644) when the
  block ends without error and removed when it raises."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
  try:
    yield fd, tmp
    os.chmod(tmp, 0o644)
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise


@contextlib.contextmanager
def atomic_open(path: PathLike) -> Iterator[BinaryIO]:
  """A binary file to write that replaces `path` when the block ends without error."""
  path = pathlib.Path(path)
  with _replacing(path, f".{path.name}.", ".tmp") as (fd, _), os.fdopen(fd, "wb") as f:
    yield f


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
  """Writes `data` to `path` atomically."""
  with atomic_open(path) as f:
    f.write(data)


def atomic_write_text(path: PathLike, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically."""
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(
  path: PathLike, obj: Any, *, indent: int | None = 2, sort_keys: bool = False
) -> None:
  """Writes `obj` as JSON (with a final newline) to `path` atomically."""
  atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def atomic_write_with(path: PathLike, write: Callable[[pathlib.Path], None]) -> None:
  """Calls `write(tmp_path)` (for writers that want a path, e.g. `np.savez`), then
  moves the result to `path` atomically. `tmp_path` keeps `path`'s suffix."""
  path = pathlib.Path(path)
  with _replacing(path, f".{path.stem}.", path.suffix) as (fd, tmp):
    os.close(fd)
    write(pathlib.Path(tmp))


@contextlib.contextmanager
def atomic_dir(
  path: PathLike, *, is_complete: Callable[[pathlib.Path], bool] | None = None
) -> Iterator[pathlib.Path]:
  """A temporary sibling directory, renamed to `path` when the block ends.

  When `path` already exists on success (another writer finished first), the
  temporary directory is dropped if `is_complete(path)` says the existing one is
  whole; otherwise the rename error is raised.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
  try:
    yield tmp
    tmp.chmod(0o755)
    _fsync_tree(tmp)
    try:
      os.rename(tmp, path)
    except OSError:
      if is_complete is None or not is_complete(path):
        raise
    fsync_path(path.parent)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
