"""Reads checkpoint tensors into numpy: safetensors (single or sharded) or PyTorch .bin.

The .bin reader understands PyTorch's zip format without importing torch: it unpickles
`data.pkl` with a restricted unpickler that only rebuilds tensors from the archive's raw
storages, so no code from the file is ever run. Every offset, size and stride in the file
is checked against its storage before a view is made (non-negative integers, the last
element inside the storage, no more elements than the storage holds), so a crafted file
is a `PretrainedFormatError`, never a read outside the buffer.
"""

from __future__ import annotations

import collections
import json
import pathlib
import pickle
import zipfile

import ml_dtypes
import numpy as np
from safetensors import numpy as safetensors_numpy

from llmjax.util import errors

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"


def checkpoint_files(model_dir: pathlib.Path) -> list[pathlib.Path]:
  """The weight files of a checkpoint directory, preferring safetensors."""
  if (model_dir / SAFETENSORS).is_file():
    return [model_dir / SAFETENSORS]
  if (model_dir / SAFETENSORS_INDEX).is_file():
    index = json.loads((model_dir / SAFETENSORS_INDEX).read_text())
    return [model_dir / name for name in sorted(set(index["weight_map"].values()))]
  if (model_dir / TORCH_BIN).is_file():
    return [model_dir / TORCH_BIN]
  present = sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else []
  raise errors.PretrainedNotFoundError(
    f"no weights in {model_dir}: expected {SAFETENSORS}, {SAFETENSORS_INDEX} or {TORCH_BIN};"
    f" found {present}"
  )


def load_tensors(model_dir: pathlib.Path) -> dict[str, np.ndarray]:
  """All tensors of the checkpoint in `model_dir`, by their stored names."""
  tensors: dict[str, np.ndarray] = {}
  for path in checkpoint_files(model_dir):
    if not path.is_file():
      raise errors.PretrainedNotFoundError(
        f"checkpoint shard {path} listed in {SAFETENSORS_INDEX} is missing"
      )
    if path.suffix == ".safetensors":
      tensors.update(safetensors_numpy.load_file(path))
    else:
      tensors.update(load_torch_bin(path))
  return tensors


_STORAGE_DTYPES = {
  "FloatStorage": np.float32,
  "DoubleStorage": np.float64,
  "HalfStorage": np.float16,
  "BFloat16Storage": ml_dtypes.bfloat16,
  "LongStorage": np.int64,
  "IntStorage": np.int32,
  "ShortStorage": np.int16,
  "CharStorage": np.int8,
  "ByteStorage": np.uint8,
  "BoolStorage": np.bool_,
}


class _StorageType:
  def __init__(self, dtype):
    self.dtype = np.dtype(dtype)


def _is_index(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _rebuild_tensor(storage, offset, size, stride, *unused_args):
  """A copy of the tensor (`size`, `stride`, `offset` in elements) viewed in `storage`."""
  what = f"tensor (offset {offset!r}, size {size!r}, stride {stride!r})"
  if not isinstance(storage, np.ndarray):
    raise _BadTensor(f"{what} has no storage")
  if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)):
    raise _BadTensor(f"{what}: size and stride must be tuples")
  size, stride = tuple(size), tuple(stride)
  if len(size) != len(stride) or not all(map(_is_index, (offset, *size, *stride))):
    raise _BadTensor(
      f"{what}: offset, sizes and strides must be non-negative integers, one stride per size"
    )
  numel = int(np.prod(size, dtype=object)) if size else 1
  if numel == 0:
    return np.zeros(size, storage.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= storage.size:
    raise _BadTensor(f"{what} reaches element {last} of a storage of {storage.size} elements")
  if numel > storage.size:
    raise _BadTensor(f"{what} has {numel} elements, more than its storage's {storage.size}")
  # Dimensions of one element take no step (their stride is never used).
  strides = tuple(0 if n == 1 else s * storage.itemsize for n, s in zip(size, stride))
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=strides)
  return np.array(view)


class _BadTensor(pickle.UnpicklingError):
  """A tensor or storage record of the file that does not fit its storage."""


def _rebuild_parameter(data, *unused_args):
  return data


def _rebuild_from_type(func, unused_new_type, args, unused_state):
  return func(*args)


_ALLOWED_GLOBALS = {
  ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
  ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
  ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
  ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
  ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
  ("collections", "OrderedDict"): collections.OrderedDict,
}


class _TorchUnpickler(pickle.Unpickler):
  """Rebuilds tensors as numpy arrays; refuses every other global."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str, source: pathlib.Path):
    super().__init__(file)
    self._archive, self._prefix, self._source = archive, prefix, source
    self._storages: dict[str, np.ndarray] = {}

  def find_class(self, module, name):
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(_STORAGE_DTYPES[name])
    if (module, name) in _ALLOWED_GLOBALS:
      return _ALLOWED_GLOBALS[(module, name)]
    raise pickle.UnpicklingError(
      f"{self._source} refers to {module}.{name}, which a weights file should not contain;"
      " convert the checkpoint to safetensors"
    )

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or len(pid) != 5:
      raise pickle.UnpicklingError(f"{self._source}: unsupported persistent id {pid!r}")
    kind, storage_type, key, unused_location, numel = pid
    if kind != "storage" or not isinstance(storage_type, _StorageType):
      raise pickle.UnpicklingError(f"{self._source}: unsupported persistent id {pid!r}")
    if not isinstance(key, str) or not _is_index(numel):
      raise _BadTensor(f"storage record {pid!r}: key must be a string, size a count")
    if key not in self._storages:
      name = f"{self._prefix}data/{key}"
      try:
        info = self._archive.getinfo(name)
      except KeyError:
        raise _BadTensor(f"storage {key!r} is not in the archive ({name})") from None
      nbytes = numel * storage_type.dtype.itemsize
      if info.file_size < nbytes:
        raise _BadTensor(
          f"storage {key!r} claims {numel} elements ({nbytes} bytes) but holds "
          f"{info.file_size} bytes"
        )
      with self._archive.open(info) as f:
        raw = f.read(nbytes)
      self._storages[key] = np.frombuffer(raw, dtype=storage_type.dtype.newbyteorder("<"))
    storage = self._storages[key]
    if storage.size != numel:
      raise _BadTensor(f"storage {key!r} is recorded with {numel} and {storage.size} elements")
    return storage


def load_torch_bin(path: pathlib.Path) -> dict[str, np.ndarray]:
  """Reads a `torch.save`d state dict (zip format, PyTorch >= 1.6) into numpy arrays."""
  if not zipfile.is_zipfile(path):
    raise errors.PretrainedFormatError(
      f"{path} is not a zip-format PyTorch checkpoint (saved before PyTorch 1.6?);"
      " re-save it with safetensors"
    )
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
    if len(pickles) != 1:
      raise errors.PretrainedFormatError(
        f"{path}: expected one data.pkl in the archive, found {pickles}"
      )
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = f"{prefix}byteorder"
    if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
      raise errors.PretrainedFormatError(f"{path}: big-endian checkpoints are not supported")
    try:
      with archive.open(pickles[0]) as f:
        state = _TorchUnpickler(f, archive, prefix, path).load()
    except errors.LlmjaxError:
      raise
    except Exception as e:  # A crafted or damaged pickle can raise almost any type.
      raise errors.PretrainedFormatError(
        f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: {e}); convert it "
        "to safetensors or re-save it with torch.save"
      ) from e
  if not isinstance(state, dict):
    raise errors.PretrainedFormatError(
      f"{path} holds a {type(state).__name__}, not a state dict of tensors"
    )
  if "state_dict" in state and isinstance(state["state_dict"], dict):
    state = state["state_dict"]
  return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
