"""Notes corpora on disk: token directories with a `notes` manifest section."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from llmjax.data import shards, sources
from llmjax.data.notes.pipelines import (
  DEFAULT_MODEL,
  check_variant,
  label_inventory,
  load_pipeline,
  model_id,
)
from llmjax.data.notes.tagging import TaggedText, note_entropy, tag_text
from llmjax.data.notes.weaving import NotesStream, note_vocab, tagging_scheme, weave
from llmjax.data.tokenizer import Tokenizer
from llmjax.util import errors, fileio

CORPUS_FORMAT = "llmjax.notes/1"


def split_word(tagged: TaggedText, val_fraction: float, search_words: int = 2000) -> int:
  """Index of the first validation word: the last `val_fraction` of the words,
  moved forward to a word that starts a line if one is within `search_words`."""
  n = tagged.num_words
  k = min(n, int(round((1.0 - val_fraction) * n)))
  text = tagged.text
  for j in range(max(k, 1), min(n, k + search_words)):
    if "\n" in text[tagged.ends[j - 1] : tagged.starts[j]]:
      return j
  return k


def write_corpus(
  out_dir: str | os.PathLike[str],
  tagged: TaggedText,
  stream: NotesStream,
  tokenizer: Tokenizer,
  val_fraction: float = 0.1,
) -> dict[str, Any]:
  """Writes a notes corpus as a token directory (see llmjax.data.shards).

  Files: train.bin and val.bin (flat uint32 ids, notes included; val is the
  last `val_fraction` of the words, cut at a word boundary, so every variant of
  a text holds out the same text), train.words.bin and val.words.bin (uint32
  index of each word's first token, see NotesStream.word_starts), and
  manifest.json: the token-directory fields `shards.load_token_splits` reads
  (each split also counts its words and the UTF-8 bytes of its text), plus a
  `notes` section (variant, scheme, spaCy model, note vocabulary, counts of
  bytes, words, notes and tokens).

  Returns:
    The manifest.
  """
  val_fraction = shards.check_val_fraction(val_fraction)
  if tagged.num_words == 0:
    raise errors.DataError("The text has no words; a notes corpus needs some.")
  k = split_word(tagged, val_fraction) if val_fraction else tagged.num_words
  if val_fraction and not 0 < k < tagged.num_words:
    raise errors.DataError(
      f"{tagged.num_words} words leave no validation text at "
      f"val_fraction={val_fraction}; use a larger text."
    )
  cut = int(stream.word_starts[k]) if k < tagged.num_words else len(stream.ids)
  parts = {"train": (stream.ids[:cut], stream.word_starts[:k])}
  if val_fraction:
    parts["val"] = (stream.ids[cut:], stream.word_starts[k:] - cut)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  char_cut = int(tagged.ends[k - 1]) if k < tagged.num_words else len(tagged.text)
  texts = {"train": tagged.text[:char_cut], "val": tagged.text[char_cut:]}
  splits = {}
  for name, (ids, starts) in parts.items():
    ids.astype(np.uint32).tofile(out / f"{name}.bin")
    starts.astype(np.uint32).tofile(out / f"{name}.words.bin")
    splits[name] = {
      "file": f"{name}.bin",
      "n_tokens": int(len(ids)),
      "words_file": f"{name}.words.bin",
      "n_words": len(starts),
      "n_bytes": len(texts[name].encode("utf-8")),
    }
  manifest = _manifest(
    tokenizer,
    stream.base_vocab_size,
    stream.notes,
    splits,
    variant=stream.variant,
    scheme=tagged.scheme,
    model=tagged.model,
    val_fraction=val_fraction,
    entropy=(note_entropy(tagged) if stream.variant in ("pre", "post") else 0.0),
    counts={
      "bytes": len(tagged.text.encode("utf-8")),
      "words": tagged.num_words,
      "notes": stream.num_notes,
      "tokens": int(len(stream.ids)),
    },
    text_sha256=hashlib.sha256(tagged.text.encode("utf-8")).hexdigest(),
  )
  _write_manifest(out, manifest)
  return manifest


def _manifest(
  tokenizer: Tokenizer,
  base_vocab_size: int,
  note_strings: Sequence[str],
  splits: dict[str, Any],
  *,
  variant: str,
  scheme: str,
  model: str,
  val_fraction: float,
  entropy: float,
  counts: dict[str, int],
  **extra: Any,
) -> dict[str, Any]:
  """A notes corpus manifest: token-directory fields plus a `notes` section."""
  return {
    "format_version": shards.FORMAT_VERSION,
    "tokenizer": tokenizer.name,
    "tokenizer_fingerprint": tokenizer.fingerprint,
    "vocab_size": base_vocab_size + len(note_strings),
    "eot_id": tokenizer.eot_id,
    "dtype": "uint32",
    "splits": splits,
    **{f"n_{name}": info["n_tokens"] for name, info in splits.items()},
    "val_fraction": val_fraction,
    "notes": {
      "format": CORPUS_FORMAT,
      "variant": variant,
      "scheme": scheme,
      "spacy_model": model,
      "base_tokenizer": tokenizer.name,
      "base_vocab_size": base_vocab_size,
      "note_vocab": list(note_strings),
      "note_entropy_bits_per_word": entropy,
      **extra,
      "counts": counts,
    },
  }


def _write_manifest(out: pathlib.Path, manifest: dict[str, Any]) -> None:
  fileio.atomic_write_json(out / shards.MANIFEST, manifest)  # Written last: marks completion.


def _entropy_bits(counts: np.ndarray) -> float:
  total = counts.sum()
  if not total:
    return 0.0
  p = counts[counts > 0] / total
  return float(-(p * np.log2(p)).sum()) + 0.0


def write_streamed_corpus(
  docs: Iterable[str],
  out_dir: str | os.PathLike[str],
  variant: str,
  tokenizer: Tokenizer,
  model: str = DEFAULT_MODEL,
  scheme: str = "tag",
  *,
  limit_chars: int,
  val_fraction: float = 0.1,
  chunk_chars: int = 1 << 20,
  source: str = "",
  progress: Callable[[int, int], None] | None = None,
  **tag_kwargs: Any,
) -> dict[str, Any]:
  """Tags and weaves a stream of documents into a notes corpus, memory bounded.

  For corpora too large to hold as one string (e.g. a streamed HF dataset).
  Documents are joined with blank lines, as `llmjax.data.sources` joins HF
  rows, and tagged in chunks of about `chunk_chars` characters. The first
  documents, about `val_fraction * limit_chars` characters, form the val
  split (none when val_fraction is 0); the following ones the train split, until `limit_chars` characters
  are read. Open schemes number labels in order of first appearance, so note
  ids stay fixed while the corpus grows.

  Args:
    docs: the documents' texts (empty ones are skipped).
    out_dir: the corpus directory (files as in `write_corpus`).
    variant: pre, post, blank or none.
    tokenizer: the base tokenizer.
    model: the spaCy pipeline.
    scheme: the tagging scheme (pre/post).
    limit_chars: characters to read; a stream may be endless, so required.
    val_fraction: share of `limit_chars` for the val split.
    chunk_chars: characters tagged per `tag_text` call.
    source: a line saying where the documents came from (for the manifest).
    progress: tag_text's progress callback.
    **tag_kwargs: n_process, batch_size, max_chars for `tag_text`.

  Returns:
    The manifest.
  """
  check_variant(variant)
  if limit_chars <= 0:
    raise errors.ConfigError(
      f"A streamed notes corpus needs notes.limit_chars > 0 (got "
      f"{limit_chars}), e.g. --config.notes.limit_chars="
      "100_000_000: the stream may never end."
    )
  val_fraction = shards.check_val_fraction(val_fraction)
  tag_scheme = tagging_scheme(variant, scheme)
  nlp = load_pipeline(model, tag_scheme)
  labels = list(label_inventory(nlp, tag_scheme))
  label_counts: dict[str, int] = {}
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  info = {
    name: {
      "file": f"{name}.bin",
      "n_tokens": 0,
      "words_file": f"{name}.words.bin",
      "n_words": 0,
      "n_bytes": 0,
    }
    for name in (("val", "train") if val_fraction else ("train",))
  }
  files = {
    name: (open(out / f"{name}.bin", "wb"), open(out / f"{name}.words.bin", "wb")) for name in info
  }
  n_notes = 0

  def flush(name: str, parts: list[str]) -> None:
    nonlocal n_notes
    if not parts:
      return
    split = info[name]
    text = sources.HF_DOC_SEPARATOR.join(parts)
    if split["n_bytes"]:
      text = sources.HF_DOC_SEPARATOR + text
    parts.clear()
    tagged = tag_text(
      text,
      model,
      tag_scheme,  # Cached: pre and post share tags.
      progress=progress,
      **tag_kwargs,
    )
    labels.extend(sorted(set(tagged.labels) - set(labels)))
    stream = weave(tagged, variant, tokenizer, labels=labels)
    for label, n in zip(*np.unique(tagged.label_ids, return_counts=True)):
      key = tagged.labels[label]
      label_counts[key] = label_counts.get(key, 0) + int(n)
    ids_file, words_file = files[name]
    stream.ids.astype(np.uint32).tofile(ids_file)
    (stream.word_starts + split["n_tokens"]).astype(np.uint32).tofile(words_file)
    split["n_tokens"] += int(len(stream.ids))
    split["n_words"] += tagged.num_words
    split["n_bytes"] += len(text.encode("utf-8"))
    n_notes += stream.num_notes

  try:
    val_chars = int(round(val_fraction * limit_chars))
    name, parts, chars, chunk = next(iter(info)), [], 0, 0
    for doc in docs:
      if not doc or doc.isspace():
        continue
      doc = doc[: limit_chars - chars]
      parts.append(doc)
      chars += len(doc)
      chunk += len(doc)
      if chunk >= chunk_chars or (name == "val" and chars >= val_chars):
        flush(name, parts)
        chunk = 0
        if chars >= val_chars:
          name = "train"
      if chars >= limit_chars:
        break
    flush(name, parts)
  finally:
    for f in files.values():
      f[0].close()
      f[1].close()
  for name, split in info.items():
    if not split["n_words"]:
      raise errors.DataError(
        f"The stream gave no words for the {name} split ({chars:,} characters"
        f" read, limit_chars={limit_chars:,}, val_fraction={val_fraction}); "
        "raise notes.limit_chars or check the dataset."
      )
  counts = np.asarray(list(label_counts.values()), np.int64)
  manifest = _manifest(
    tokenizer,
    tokenizer.vocab_size,
    note_vocab(labels, variant),
    info,
    variant=variant,
    scheme=tag_scheme,
    model=model_id(nlp),
    val_fraction=val_fraction,
    entropy=_entropy_bits(counts) if variant in ("pre", "post") else 0.0,
    counts={
      "bytes": sum(s["n_bytes"] for s in info.values()),
      "words": sum(s["n_words"] for s in info.values()),
      "notes": n_notes,
      "tokens": sum(s["n_tokens"] for s in info.values()),
    },
    source=source,
    limit_chars=limit_chars,
  )
  _write_manifest(out, manifest)
  return manifest


def read_corpus(corpus_dir: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Returns ({split: memory-mapped uint32 ids}, manifest) of a notes corpus."""
  d = pathlib.Path(corpus_dir)
  path = d / shards.MANIFEST
  if not path.is_file():
    raise errors.DataFileNotFoundError(
      f"No notes corpus at {str(d)!r}: {shards.MANIFEST} is missing; write "
      "one with `python -m llmjax.notes --input=FILE --output=DIR`."
    )
  manifest = json.loads(path.read_text())
  if "notes" not in manifest:
    raise errors.DataError(
      f"{path} is a token directory without notes; write a "
      "notes corpus with `python -m llmjax.notes`."
    )
  ids = {
    name: shards.open_tokens(d / info["file"], manifest["dtype"], info["n_tokens"])
    for name, info in manifest["splits"].items()
  }
  return ids, manifest
