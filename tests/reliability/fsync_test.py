"""Row 21: every atomic write (`llmjax.util.fileio`) fsyncs the new file before renaming it
into place and its directory after, so a power loss cannot leave a renamed, empty file."""

import os

import numpy as np
import pytest

from llmjax.util import fileio


@pytest.fixture
def calls(monkeypatch):
  """The fsync, replace and rename calls, in order: ("fsync", path) and ("rename", dst)."""
  log = []
  fsync, replace, rename = os.fsync, os.replace, os.rename

  def record_fsync(fd):
    log.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
    fsync(fd)

  def record(kind, real):
    def call(src, dst, *args, **kwargs):
      log.append((kind, os.fspath(src), os.fspath(dst)))
      return real(src, dst, *args, **kwargs)

    return call

  monkeypatch.setattr(os, "fsync", record_fsync)
  monkeypatch.setattr(os, "replace", record("rename", replace))
  monkeypatch.setattr(os, "rename", record("rename", rename))
  return log


@pytest.mark.parametrize(
  "write",
  [
    lambda p: fileio.atomic_write_text(p, "text"),
    lambda p: fileio.atomic_write_json(p, {"a": 1}),
    lambda p: fileio.atomic_write_bytes(p, b"bytes"),
    lambda p: fileio.atomic_write_with(p, lambda tmp: np.save(tmp, np.arange(3))),
  ],
  ids=["text", "json", "bytes", "with"],
)
def test_atomic_file_write_fsyncs_the_file_then_renames_then_fsyncs_the_directory(
  tmp_path, calls, write
):
  target = tmp_path / "out.npy"
  write(target)
  (rename,) = [c for c in calls if c[0] == "rename"]
  tmp = rename[1]
  assert rename[2] == str(target) and os.path.dirname(tmp) == str(tmp_path)
  assert calls == [("fsync", tmp), rename, ("fsync", str(tmp_path))]


def test_atomic_dir_fsyncs_every_file_and_the_directory_before_the_rename(tmp_path, calls):
  target = tmp_path / "tokens"
  with fileio.atomic_dir(target) as tmp:
    (tmp / "sub").mkdir()
    (tmp / "sub" / "a.bin").write_bytes(b"a")
    (tmp / "manifest.json").write_text("{}")
  rename = ("rename", str(tmp), str(target))
  assert calls[-2:] == [rename, ("fsync", str(tmp_path))]
  before = calls[:-2]
  assert sorted(before) == sorted(
    [
      ("fsync", str(tmp / "sub" / "a.bin")),
      ("fsync", str(tmp / "sub")),
      ("fsync", str(tmp / "manifest.json")),
      ("fsync", str(tmp)),
    ]
  )
  assert before[-1] == ("fsync", str(tmp))  # The directory after its files.
  assert (target / "sub" / "a.bin").read_bytes() == b"a"


def test_a_failed_write_renames_and_fsyncs_nothing(tmp_path, calls):
  target = tmp_path / "out.txt"
  target.write_text("old")
  with pytest.raises(RuntimeError), fileio.atomic_open(target) as f:
    f.write(b"half")
    raise RuntimeError("write failed")
  assert calls == [] and target.read_text() == "old"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
