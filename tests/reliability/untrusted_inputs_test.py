"""Untrusted inputs: crafted PyTorch .bin weights are refused without reading outside their
buffers; export never overwrites or writes through what is already at --out."""

import json
import os
import pathlib
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from llmjax.pretrained import weights
from llmjax.util import errors

# --- crafted .bin files (the zip + pickle layout torch.save writes, built without torch) -----


def _int(v):
  raw = v.to_bytes((v.bit_length() + 8) // 8 or 1, "little", signed=True)
  return b"\x8a" + bytes([len(raw)]) + raw  # LONG1


def _str(text):
  data = text.encode()
  return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _tuple(items):
  return b"(" + b"".join(items) + b"t"


def _global(module, name):
  return b"c" + f"{module}\n{name}\n".encode()


def _tensor(key, numel, offset, size, stride):
  """Pickle ops of `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`."""
  storage = _tuple(
    [_str("storage"), _global("torch", "FloatStorage"), _str(key), _str("cpu"), _int(numel)]
  )
  args = [
    storage + b"Q",  # BINPERSID
    _int(offset),
    _tuple([_int(n) for n in size]),
    _tuple([_int(s) for s in stride]),
    b"\x89",  # False: requires_grad
    _global("collections", "OrderedDict") + b")R",
  ]
  return _global("torch._utils", "_rebuild_tensor_v2") + _tuple(args) + b"R"


def write_bin(path, tensors, storages):
  """A .bin of `tensors` (name -> (key, numel, offset, size, stride)) over `storages`
  (key -> float32 values)."""
  body = b"".join(_str(name) + _tensor(*spec) for name, spec in tensors.items())
  pkl = b"\x80\x02}(" + body + b"u."
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    z.writestr("archive/data.pkl", pkl)
    z.writestr("archive/byteorder", "little")
    for key, values in storages.items():
      z.writestr(f"archive/data/{key}", np.asarray(values, "<f4").tobytes())
    z.writestr("archive/version", "3\n")
  return path


STORAGE = {"0": np.arange(6, dtype=np.float32)}
CRAFTED = {
  "stride-4096": ("0", 6, 0, (2, 3), (4096, 1)),  # Read past the 24-byte buffer.
  "stride-2^40": ("0", 6, 0, (2, 3), (2**40, 1)),  # Crashed the process (SIGSEGV).
  "offset-past-end": ("0", 6, 6, (1,), (1,)),
  "negative-stride": ("0", 6, 5, (6,), (-1,)),
  "negative-offset": ("0", 6, -1, (2,), (1,)),
  "overlapping": ("0", 6, 0, (1 << 20, 1 << 20), (0, 0)),  # 2^40 elements from 6.
  "numel-beyond-data": ("0", 1 << 40, 0, (6,), (1,)),
  "size-stride-mismatch": ("0", 6, 0, (2, 3), (3,)),
  "missing-storage": ("7", 6, 0, (6,), (1,)),
}


def test_well_formed_crafted_bin_reads_like_torch(tmp_path):
  """The builder writes what the reader reads: a transposed view and a plain tensor."""
  path = write_bin(
    tmp_path / "ok.bin",
    {"t": ("0", 6, 0, (3, 2), (1, 3)), "row": ("0", 6, 3, (3,), (1,)), "s": ("0", 6, 5, (), ())},
    STORAGE,
  )
  got = weights.load_torch_bin(path)
  np.testing.assert_array_equal(got["t"], np.arange(6, dtype=np.float32).reshape(2, 3).T)
  np.testing.assert_array_equal(got["row"], [3, 4, 5])
  assert got["s"].shape == () and got["s"] == 5


_PROBE = """
import json, sys
from llmjax.pretrained import weights
from llmjax.util import errors
out = {}
for name, path in json.loads(sys.argv[1]).items():
  try:
    weights.load_torch_bin(__import__("pathlib").Path(path))
    out[name] = "loaded"
  except errors.PretrainedFormatError as e:
    out[name] = str(e)
print(json.dumps(out))
"""


def test_crafted_offsets_and_strides_are_refused_without_a_crash(tmp_path):
  """Each crafted file is a PretrainedFormatError naming the file; run in a child process, so
  a read outside the buffer that crashes shows as a failure here."""
  paths = {
    name: str(write_bin(tmp_path / f"{name}.bin", {"w": spec}, STORAGE))
    for name, spec in CRAFTED.items()
  }
  proc = subprocess.run(
    [sys.executable, "-c", _PROBE, json.dumps(paths)],
    capture_output=True,
    text=True,
    timeout=120,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
  result = json.loads(proc.stdout.splitlines()[-1])
  for name, message in result.items():
    assert message.startswith(f"{paths[name]} is not a readable PyTorch checkpoint"), (
      name,
      message,
    )
  assert "reaches element 4098 of a storage of 6 elements" in result["stride-4096"]
  assert "reaches element 1099511627778" in result["stride-2^40"]
  assert "non-negative integers" in result["negative-stride"]
  assert "non-negative integers" in result["negative-offset"]
  assert "more than its storage's 6" in result["overlapping"]
  assert "holds 24 bytes" in result["numel-beyond-data"]
  assert "not in the archive" in result["missing-storage"]


def test_crafted_bin_is_one_error_type_in_process(tmp_path):
  path = write_bin(tmp_path / "w.bin", {"w": CRAFTED["stride-4096"]}, STORAGE)
  with pytest.raises(errors.PretrainedFormatError, match=r"reaches element 4098"):
    weights.load_torch_bin(path)


# --- hub downloads: an optional revision pin, the .bin fallback from the same commit ---------

GOLDENS = pathlib.Path(__file__).resolve().parents[1] / "goldens"


def test_hub_revision_pin_reaches_every_download(tmp_path, monkeypatch):
  import huggingface_hub  # pylint: disable=import-outside-toplevel

  from llmjax.pretrained import from_hf, hf_import  # pylint: disable=import-outside-toplevel

  commit = "0123456789abcdef0123456789abcdef01234567"
  config_only = tmp_path / "models--someone--tiny" / "snapshots" / commit
  config_only.mkdir(parents=True)
  (config_only / "config.json").write_text((GOLDENS / "distilbert" / "config.json").read_text())
  calls = []

  def fake_download(repo_id, allow_patterns=None, **kwargs):
    calls.append((repo_id, kwargs.get("revision")))
    return str(config_only if len(calls) % 2 else GOLDENS / "distilbert")

  monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
  from_hf("someone/tiny@v1.0")
  # The .bin fallback comes from the commit the config came from, not a newer main.
  assert calls == [("someone/tiny", "v1.0"), ("someone/tiny", commit)]
  calls.clear()
  from_hf("someone/tiny", revision=commit)
  assert calls == [("someone/tiny", commit)] * 2
  assert hf_import.hub_revision(config_only) == commit and hf_import.hub_revision(tmp_path) is None
  with pytest.raises(errors.PretrainedNotFoundError, match="pins revision 'a'.*revision='b'"):
    from_hf("someone/tiny@a", revision="b")
