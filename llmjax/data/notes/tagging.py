"""Tagging a text with spaCy: one label per word, cached on disk."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib
import re
import time
import zipfile
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from llmjax.data.notes.pipelines import (
  DEFAULT_BATCH_SIZE,
  DEFAULT_MAX_CHARS,
  DEFAULT_MODEL,
  SCHEMES,
  label_inventory,
  labeler,
  load_pipeline,
  model_id,
  scheme_attrs,
)
from llmjax.util import assets, errors, fileio

log = logging.getLogger(__name__)

_CACHE_FORMAT = 1


# Where long texts are cut, best first: after a blank line, a line break, a
# sentence end, any whitespace (a cut never splits a spaCy token).
_CUTS = (
  re.compile(r"\n[^\S\n]*\n\s*"),
  re.compile(r"\n\s*"),
  re.compile(r"[.!?]\s+"),
  re.compile(r"\s+"),
)


def split_text(text: str, max_chars: int) -> list[tuple[int, str]]:
  """Cuts `text` into (offset, piece) with pieces of at most `max_chars`.

  Cuts go after a blank line if there is one in the second half of the window,
  else after a line break, a sentence end, or any whitespace; only a run of
  over `max_chars` characters without whitespace is cut mid-word. The pieces
  concatenate to `text` exactly.
  """
  if max_chars < 1:
    raise errors.ConfigError(f"max_chars must be positive, got {max_chars}.")
  pieces = []
  start, n = 0, len(text)
  while n - start > max_chars:
    end = start + max_chars
    lo = start + max_chars // 2
    cut = None
    for pattern in _CUTS:
      for m in pattern.finditer(text, lo, end):
        cut = m.end()
      if cut is not None:
        break
    if cut is None:  # No whitespace in the second half: try the first half.
      for m in _CUTS[-1].finditer(text, start, end):
        cut = m.end()
    if cut is None or cut <= start:
      cut = end
    pieces.append((start, text[start:cut]))
    start = cut
  if start < n or not pieces:
    pieces.append((start, text[start:]))
  return pieces


@dataclasses.dataclass(frozen=True)
class TaggedText:
  """A text with one label per word (non-whitespace spaCy token).

  Attributes:
    text: the original text.
    starts: [W] int64 character offset of each word in `text`.
    ends: [W] int64 character offset one past each word.
    labels: the sorted label inventory; label_ids index into it.
    label_ids: [W] int32 label of each word.
    model: the spaCy pipeline, `name==version`.
    scheme: the tagging scheme.
  """

  text: str
  starts: np.ndarray
  ends: np.ndarray
  labels: tuple[str, ...]
  label_ids: np.ndarray
  model: str
  scheme: str

  @property
  def num_words(self) -> int:
    return int(self.starts.shape[0])

  def word_labels(self) -> list[str]:
    return [self.labels[i] for i in self.label_ids.tolist()]


def cache_dir() -> pathlib.Path:
  """`$LLMJAX_CACHE/notes`, default `~/.cache/llmjax/notes`."""
  return assets.cache_dir() / "notes"


def _cache_path(text: str, model: str, scheme: str, max_chars: int) -> pathlib.Path:
  import spacy  # Imported here: spaCy (heavy; only the notes corpora need it).

  key = json.dumps(
    {
      "format": _CACHE_FORMAT,
      "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
      "model": model,
      "spacy": spacy.__version__,
      "scheme": scheme,
      "max_chars": max_chars,
    },
    sort_keys=True,
  )
  return cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()}.npz"


def _save(path: pathlib.Path, tagged: TaggedText) -> None:
  meta = json.dumps({"labels": list(tagged.labels), "model": tagged.model, "scheme": tagged.scheme})
  fileio.atomic_write_with(
    path,
    lambda tmp: np.savez(
      tmp, starts=tagged.starts, ends=tagged.ends, label_ids=tagged.label_ids, meta=np.array(meta)
    ),
  )


def _load(path: pathlib.Path, text: str) -> TaggedText | None:
  try:
    with np.load(path) as f:
      meta = json.loads(str(f["meta"]))
      return TaggedText(
        text=text,
        starts=f["starts"],
        ends=f["ends"],
        labels=tuple(meta["labels"]),
        label_ids=f["label_ids"],
        model=meta["model"],
        scheme=meta["scheme"],
      )
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
    log.warning("The tag cache entry %s is damaged; tagging the text again.", path)
    return None  # A damaged cache entry is re-tagged and overwritten.


def tag_text(
  text: str,
  model: str = DEFAULT_MODEL,
  scheme: str = "tag",
  *,
  n_process: int = 1,
  batch_size: int = DEFAULT_BATCH_SIZE,
  max_chars: int = DEFAULT_MAX_CHARS,
  use_cache: bool = True,
  progress: Callable[[int, int], None] | None = None,
) -> TaggedText:
  """Tags `text` with spaCy pipeline `model`, one label per word.

  Args:
    text: any text; empty or whitespace-only text has no words.
    model: an installed spaCy pipeline name.
    scheme: one of SCHEMES.
    n_process: spaCy worker processes (`nlp.pipe(n_process=...)`).
    batch_size: pieces per `nlp.pipe` batch.
    max_chars: the text is cut into pieces of at most this many characters
      (and at most `nlp.max_length`) at paragraph, line or sentence ends.
    use_cache: read and write the tag cache (see `cache_dir`).
    progress: called as progress(words, chars) after each tagged piece.

  Returns:
    The TaggedText.
  """
  nlp = load_pipeline(model, scheme)
  mid = model_id(nlp)
  max_chars = min(max_chars, nlp.max_length)
  path = _cache_path(text, mid, scheme, max_chars) if use_cache else None
  if path is not None and path.exists():
    tagged = _load(path, text)
    if tagged is not None:
      if progress:
        progress(tagged.num_words, len(text))
      return tagged

  attrs = ["IDX", "LENGTH", "IS_SPACE"] + list(scheme_attrs(nlp, scheme))
  label_of = labeler(nlp, scheme)
  starts, ends, words = [], [], []
  pieces = [(p, o) for o, p in split_text(text, max_chars) if p.strip()]
  if progress:  # Whitespace-only pieces are not tagged.
    progress(0, len(text) - sum(len(p) for p, _ in pieces))
  docs = nlp.pipe(pieces, as_tuples=True, n_process=n_process, batch_size=batch_size)
  for doc, offset in docs:
    n_before = len(words)
    for idx, length, is_space, *keys in doc.to_array(attrs).tolist():
      if is_space:
        continue
      starts.append(offset + idx)
      ends.append(offset + idx + length)
      words.append(label_of(tuple(keys)))
    if progress:
      progress(len(words) - n_before, len(doc.text))

  labels = tuple(sorted(set(label_inventory(nlp, scheme)) | set(words)))
  index = {label: i for i, label in enumerate(labels)}
  tagged = TaggedText(
    text=text,
    starts=np.asarray(starts, np.int64),
    ends=np.asarray(ends, np.int64),
    labels=labels,
    label_ids=np.asarray([index[w] for w in words], np.int32),
    model=mid,
    scheme=scheme,
  )
  if path is not None:
    _save(path, tagged)
  return tagged


def merge_labels(*tagged: TaggedText) -> tuple[str, ...]:
  """One sorted label inventory covering several tagged texts."""
  return tuple(sorted(set().union(*(t.labels for t in tagged))))


def note_entropy(tagged: TaggedText) -> float:
  """Entropy of the notes' distribution on this text, in bits per word."""
  if tagged.num_words == 0:
    return 0.0
  counts = np.bincount(tagged.label_ids, minlength=len(tagged.labels))
  p = counts[counts > 0] / tagged.num_words
  return float(-(p * np.log2(p)).sum()) + 0.0


def scheme_entropies(
  text: str, model: str = DEFAULT_MODEL, schemes: Iterable[str] = SCHEMES, **tag_kwargs: Any
) -> dict[str, float]:
  """Bits per word of each scheme's notes on `text` (tag_text kwargs apply)."""
  return {s: note_entropy(tag_text(text, model, s, **tag_kwargs)) for s in schemes}


class WordRate:
  """A tag_text progress callback: counts words/s, advances a tqdm bar."""

  def __init__(self, bar: Any = None):
    self.bar = bar
    self.words = 0
    self.t0 = time.perf_counter()

  def __call__(self, words: int, chars: int) -> None:
    self.words += words
    if self.bar is not None:
      self.bar.update(chars)
      self.bar.set_postfix_str(f"{self.rate:,.0f} words/s", refresh=False)

  @property
  def rate(self) -> float:
    return self.words / max(time.perf_counter() - self.t0, 1e-9)
