"""Tokenise a corpus once and keep the ids on disk as flat binary token files.

A token directory holds ``<split>.bin`` files (raw little-endian ``uint16`` ids when the
vocabulary fits, else ``uint32``) and a ``manifest.json``. ``prepare_tokens`` builds one
for a configured source under ``<cache>/tokens/<key>/``, where the key hashes the
source fingerprint, the tokenizer and the validation fraction: a re-run with the same
inputs reuses it without tokenising, a changed source gets a new directory.
``write_token_shards`` streams documents (e.g. a large HF streaming dataset) into one
split file with bounded memory.

Command line (tokenise the configured default and print the manifest)::

  python -m llmjax.cli.tokens [source] [path] [tokenizer]
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import tqdm

from llmjax.config import schema as config_schema
from llmjax.data import sources
from llmjax.data.tokenizer import Tokenizer, get_tokenizer
from llmjax.util import assets, errors, fileio

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# Chunk ends are placed after a single "\n" between two non-space characters: GPT-2's
# pre-tokenizer splits there anyway, so tokenising chunks gives the same ids as
# tokenising the whole text.
_SAFE_SPLIT = re.compile(r"(?<=\S\n)(?=\S)")
_LINE_SEARCH_TOKENS = 4096


@dataclasses.dataclass
class TokenSplits:
  """Token ids of a corpus, split for training and validation.

  Attributes:
    train: read-only memmap of the training ids.
    val: read-only memmap of the validation ids; the training ids themselves when
      the corpus was built with val_fraction 0 (whole-text learning).
    manifest: the directory's manifest.json (tokenizer, vocab_size, eot_id, dtype,
      n_train, n_val, source fingerprint, val_fraction, format_version, ...).
    dir: the token directory.
  """

  train: np.ndarray
  val: np.ndarray
  manifest: dict
  dir: Path

  @property
  def val_is_train(self) -> bool:
    """Whether validation reads the training text (val_fraction 0)."""
    return "val" not in self.manifest.get("splits", {}) and self.manifest.get("val_fraction") == 0


def check_val_fraction(value) -> float:
  """`data.val_fraction` as a float in [0, 1); ConfigError otherwise.

  0 means whole-text learning: every token is trained on and the validation
  windows are drawn from the training text (the loss then measures memorisation).
  """
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
    raise errors.ConfigError(
      f"data.val_fraction={value!r} must be a number in [0, 1): the share of the text "
      f"held out for validation, e.g. 0.1; 0 trains on the whole text and validates on "
      f"training windows"
    )
  return float(value)


def token_cache_key(source_fingerprint: str, tokenizer: Tokenizer, val_fraction: float) -> str:
  ident = json.dumps(
    [FORMAT_VERSION, source_fingerprint, tokenizer.name, tokenizer.fingerprint, float(val_fraction)]
  )
  return hashlib.sha256(ident.encode()).hexdigest()[:20]


def _chunks(text: str, chunk_chars: int) -> Iterator[str]:
  start, n = 0, len(text)
  while start < n:
    end = start + chunk_chars
    if end < n:
      m = _SAFE_SPLIT.search(text, end)
      end = m.start() if m else n
    else:
      end = n
    yield text[start:end]
    start = end


def _progress(total: int | None, desc: str, enabled: bool) -> tqdm.tqdm:
  return tqdm.tqdm(
    total=total,
    desc=desc,
    unit="B",
    unit_scale=True,
    unit_divisor=1000,
    disable=not enabled,
    mininterval=0.5,
    dynamic_ncols=True,
    file=sys.stderr,
  )


def tokenize_text(
  text: str,
  tokenizer: Tokenizer,
  *,
  chunk_chars: int = 1 << 18,
  progress: bool = True,
  desc: str | None = None,
) -> np.ndarray:
  """Token ids of `text` as one array of `tokenizer.dtype`, with a MB/s progress bar.

  The text is cut into ~`chunk_chars` pieces at line boundaries and encoded on a
  thread pool; literal "<|endoftext|>" stays ordinary text.
  """
  out = []
  n_threads = max(1, min(8, os.cpu_count() or 1))
  with (
    _progress(
      len(text.encode("utf-8")) if progress else None,
      desc or f"tokenize ({tokenizer.name})",
      progress,
    ) as bar,
    concurrent.futures.ThreadPoolExecutor(n_threads) as pool,
  ):

    def encode(chunk):
      return np.asarray(tokenizer.encode(chunk), tokenizer.dtype), chunk

    # Bounded look-ahead keeps memory flat while all threads stay busy.
    pending = []
    for chunk in _chunks(text, chunk_chars):
      pending.append(pool.submit(encode, chunk))
      if len(pending) >= 2 * n_threads:
        ids, done = pending.pop(0).result()
        out.append(ids)
        bar.update(len(done.encode("utf-8")) if progress else 0)
    for fut in pending:
      ids, done = fut.result()
      out.append(ids)
      bar.update(len(done.encode("utf-8")) if progress else 0)
    if out:
      bar.set_postfix(tokens=f"{sum(len(a) for a in out):,}")
  return np.concatenate(out) if out else np.zeros(0, tokenizer.dtype)


def _val_start(tokens: np.ndarray, tokenizer: Tokenizer, val_fraction: float) -> int:
  """Index where validation starts: the last `val_fraction` of the ids, moved forward
  to just after the next token that ends a line (if one is near)."""
  n = len(tokens)
  start = n - int(round(val_fraction * n))
  stop = min(n - 1, start + _LINE_SEARCH_TOKENS)
  for i in range(max(start - 1, 0), stop):
    if tokenizer.decode(tokens[i : i + 1]).endswith("\n"):
      return i + 1
  return start


def write_array(path: Path, array: np.ndarray) -> None:
  """Writes `array`'s raw bytes (a split file of a token directory being staged)."""
  with open(path, "wb") as f:
    array.tofile(f)


def is_token_dir(directory: Path) -> bool:
  """Whether `directory` is a finished token directory (its manifest is written last)."""
  return (Path(directory) / MANIFEST).is_file()


def staging_dir(final: Path) -> contextlib.AbstractContextManager[Path]:
  """A temporary sibling of token directory `final`, renamed into place on success.

  A concurrent writer that finished first wins; this one's copy is dropped.
  """
  return fileio.atomic_dir(final, is_complete=is_token_dir)


def open_tokens(path: str | os.PathLike[str], dtype, n_tokens: int) -> np.ndarray:
  """Read-only memmap of a token file, checked against its expected length."""
  path = Path(path)
  dtype = np.dtype(dtype)
  size = path.stat().st_size
  if size != n_tokens * dtype.itemsize:
    raise errors.DataError(
      f"token file {path} has {size} bytes, but its manifest says "
      f"{n_tokens} {dtype.name} ids ({n_tokens * dtype.itemsize} bytes); "
      f"delete {path.parent} to rebuild it"
    )
  return np.memmap(path, dtype=dtype, mode="r", shape=(n_tokens,))


def load_token_splits(
  directory: str | os.PathLike[str], train_split: str = "train", val_split: str = "val"
) -> TokenSplits:
  """Opens a token directory written by `prepare_tokens` or `write_token_shards`."""
  directory = Path(directory)
  manifest_path = directory / MANIFEST
  if not manifest_path.is_file():
    raise errors.DataFileNotFoundError(
      f"no {MANIFEST} in token directory {directory}; build it "
      f"with prepare_tokens or write_token_shards"
    )
  manifest = json.loads(manifest_path.read_text())
  if manifest.get("format_version") != FORMAT_VERSION:
    raise errors.DataError(
      f"token directory {directory} has format_version "
      f"{manifest.get('format_version')}, this code reads "
      f"{FORMAT_VERSION}; delete it to rebuild"
    )
  arrays = []
  for split in (train_split, val_split):
    info = manifest.get("splits", {}).get(split)
    if info is None and split == val_split and manifest.get("val_fraction") == 0:
      arrays.append(arrays[0])  # Whole-text learning: validate on training windows.
      continue
    if info is None:
      raise errors.DataError(
        f"token directory {directory} has no split {split!r}; it has "
        f"{sorted(manifest.get('splits', {}))}"
      )
    arrays.append(open_tokens(directory / info["file"], manifest["dtype"], info["n_tokens"]))
  return TokenSplits(train=arrays[0], val=arrays[1], manifest=manifest, dir=directory)


def optional_split(splits: TokenSplits, name: str) -> np.ndarray | None:
  """Memmap of another split of the token directory (e.g. "test"), or None if absent."""
  info = splits.manifest.get("splits", {}).get(name)
  if info is None:
    return None
  return open_tokens(splits.dir / info["file"], splits.manifest["dtype"], info["n_tokens"])


def tokenizer_manifest(tokenizer: Tokenizer) -> dict:
  return {
    "format_version": FORMAT_VERSION,
    "tokenizer": tokenizer.name,
    "tokenizer_fingerprint": tokenizer.fingerprint,
    "vocab_size": tokenizer.vocab_size,
    "eot_id": tokenizer.eot_id,
    "dtype": tokenizer.dtype.name,
  }


def prepare_tokens(
  data_cfg, cache_root: str | os.PathLike[str] | None = None, *, progress: bool = True
) -> TokenSplits:
  """Token ids of the text source `data_cfg` describes, tokenised once and cached.

  Only text sources (`sources.TEXT_READERS`); `llmjax.data.registry.prepare_tokens`
  serves every `data.source`.

  Args:
    data_cfg: data config (the `data` section of `llmjax.config.schema`: source, path,
      tokenizer, val_fraction, ...).
    cache_root: cache root; default `$LLMJAX_CACHE`. Files go to `<root>/tokens/<key>/`.
    progress: show a progress bar while tokenising.

  Returns:
    The train/val memmaps: validation is the last `val_fraction` of the token stream,
    starting at a line boundary when one is within a few thousand tokens. With
    val_fraction 0 every token is trained on and `val` is the training stream.
  """
  data_cfg = config_schema.section("data", data_cfg)  # Keys it lacks: their defaults.
  val_fraction = check_val_fraction(data_cfg.val_fraction)
  src = sources.read_source(data_cfg)
  tokenizer = get_tokenizer(data_cfg.tokenizer)
  key = token_cache_key(src.fingerprint, tokenizer, val_fraction)
  root = Path(cache_root) if cache_root is not None else assets.cache_dir()
  out = root / "tokens" / key
  if is_token_dir(out):
    return load_token_splits(out)

  tokens = tokenize_text(
    src.text, tokenizer, progress=progress, desc=f"tokenize {src.description.split(' (')[0]}"
  )
  split = _val_start(tokens, tokenizer, val_fraction) if val_fraction else len(tokens)
  train, val = tokens[:split], tokens[split:]
  if len(train) == 0 or (val_fraction and len(val) == 0):
    raise errors.DataError(
      f"{src.description} gives {len(tokens)} tokens with tokenizer "
      f"{tokenizer.name!r}: {len(train)} for training and {len(val)} for validation "
      f"(val_fraction={val_fraction}); use a larger corpus or change "
      f"data.val_fraction"
    )
  parts = {"train": train, "val": val} if val_fraction else {"train": train}
  manifest = {
    **tokenizer_manifest(tokenizer),
    "n_train": int(len(train)),
    "n_val": int(len(val)),
    "splits": {
      name: {"file": f"{name}.bin", "n_tokens": int(len(ids))} for name, ids in parts.items()
    },
    "source_fingerprint": src.fingerprint,
    "source": src.description,
    "n_replaced_bytes": src.n_replaced_bytes,
    "n_chars": len(src.text),
    "val_fraction": val_fraction,
    "key": key,
  }
  with staging_dir(out) as tmp:
    for name, ids in parts.items():
      write_array(tmp / f"{name}.bin", ids)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
  return load_token_splits(out)


def write_token_shards(
  docs: Iterable[str],
  out_dir: str | os.PathLike[str],
  tokenizer: Tokenizer | str,
  *,
  split: str = "train",
  docs_per_batch: int = 512,
  max_tokens: int | None = None,
  progress: bool = True,
) -> dict:
  """Streams documents into `<out_dir>/<split>.bin` with `eot_id` between documents.

  Memory stays bounded by one batch of documents, so this suits corpora larger than
  RAM (HF streaming datasets). Empty documents are skipped. The file appears
  atomically; `<out_dir>/manifest.json` gains an entry for `split` (so writing
  "train" and "val" makes a directory `load_token_splits` opens).

  Args:
    docs: the documents' texts.
    out_dir: the token directory (created if needed).
    tokenizer: a Tokenizer or a name for `get_tokenizer`.
    split: split name; the file is `<split>.bin`.
    docs_per_batch: documents per `encode_batch` call.
    max_tokens: stop after this many ids (the last document is cut).
    progress: show a progress bar (MB/s of text).

  Returns:
    The split's manifest entry: file, n_tokens, n_docs.
  """
  if isinstance(tokenizer, str):
    tokenizer = get_tokenizer(tokenizer)
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  manifest_path = out_dir / MANIFEST
  manifest = tokenizer_manifest(tokenizer)
  if manifest_path.is_file():
    old = json.loads(manifest_path.read_text())
    if any(old.get(k) != v for k, v in manifest.items()):
      raise errors.DataError(
        f"token directory {out_dir} was written with tokenizer "
        f"{old.get('tokenizer')!r}, not {tokenizer.name!r}; use another "
        f"out_dir"
      )
    manifest = old
  eot = np.asarray([tokenizer.eot_id], tokenizer.dtype)
  n_tokens = n_docs = 0
  with (
    fileio.atomic_open(out_dir / f"{split}.bin") as f,
    _progress(None, f"tokenize {split}", progress) as bar,
  ):
    batch: list[str] = []

    def flush():
      nonlocal n_tokens, n_docs
      for ids in tokenizer.encode_batch(batch):
        if max_tokens is not None and n_tokens >= max_tokens:
          break
        arr = np.asarray(ids, tokenizer.dtype)
        if n_docs:
          arr = np.concatenate([eot, arr])
        if max_tokens is not None:
          arr = arr[: max_tokens - n_tokens]
        arr.tofile(f)
        n_tokens += len(arr)
        n_docs += 1
      bar.update(sum(len(d.encode("utf-8")) for d in batch))
      bar.set_postfix(tokens=f"{n_tokens:,}", docs=f"{n_docs:,}", refresh=False)
      batch.clear()

    for doc in docs:
      if max_tokens is not None and n_tokens >= max_tokens:
        break
      if doc:
        batch.append(doc)
      if len(batch) >= docs_per_batch:
        flush()
    if batch:
      flush()
    if n_tokens == 0:
      raise errors.DataError(
        f"no tokens for split {split!r} in {out_dir}: the documents were all empty"
      )
  entry = {"file": f"{split}.bin", "n_tokens": n_tokens, "n_docs": n_docs}
  manifest.setdefault("splits", {})[split] = entry
  for name, key in (("train", "n_train"), ("val", "n_val")):
    if name in manifest["splits"]:
      manifest[key] = manifest["splits"][name]["n_tokens"]
  fileio.atomic_write_json(manifest_path, manifest)
  return entry
