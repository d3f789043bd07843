"""Weaving notes into a base token stream: the pre, post, blank and none variants."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from llmjax.data.notes.pipelines import BLANK, DEFAULT_MODEL, check_scheme, check_variant
from llmjax.data.notes.tagging import TaggedText, tag_text
from llmjax.data.tokenizer import Tokenizer
from llmjax.util import errors


@dataclasses.dataclass(frozen=True)
class NotesStream:
  """A token stream with notes.

  Attributes:
    ids: [N] uint32 token ids; ids >= base_vocab_size are notes.
    word_starts: [W] int64 index in `ids` where each word's segment begins
      (the whitespace before it, its note in `pre`, its tokens, its note in
      `post`/`blank`). Text after the last word ends the stream.
    notes: note strings; note i has id base_vocab_size + i.
    base_vocab_size: size of the base tokenizer's vocabulary.
    variant: one of VARIANTS.
  """

  ids: np.ndarray
  word_starts: np.ndarray
  notes: tuple[str, ...]
  base_vocab_size: int
  variant: str

  @property
  def vocab_size(self) -> int:
    return self.base_vocab_size + len(self.notes)

  @property
  def num_notes(self) -> int:
    return int((self.ids >= self.base_vocab_size).sum())


def note_vocab(labels: Sequence[str], variant: str) -> tuple[str, ...]:
  """The note strings of `variant` for a label inventory."""
  check_variant(variant)
  if variant == "none":
    return ()
  if variant == "blank":
    return (f"[{BLANK}]",)
  return tuple(f"[{label}]" for label in labels)


def _segment_splitter(tokenizer: Tokenizer) -> Callable[[str, int], tuple[list[int], list[int]]]:
  """f(segment, lead) -> (whitespace ids, word ids), memoised.

  `segment` is `lead` characters of whitespace followed by a word. GPT-2
  attaches one space to the word; other leading whitespace becomes tokens of
  its own, which are returned first (when the encoding splits exactly there).
  """
  memo: dict[tuple[str, int], tuple[list[int], list[int]]] = {}

  def split(segment: str, lead: int) -> tuple[list[int], list[int]]:
    key = (segment, lead)
    out = memo.get(key)
    if out is None:
      ids = list(tokenizer.encode(segment))
      detached = segment[:lead]
      if detached.endswith(" "):
        detached = detached[:-1]
      k = 0
      if detached:
        k = next((k for k in range(1, len(ids)) if tokenizer.decode(ids[:k]) == detached), 0)
      out = memo[key] = (ids[:k], ids[k:])
    return out

  return split


def weave(
  tagged: TaggedText, variant: str, tokenizer: Tokenizer, labels: Sequence[str] | None = None
) -> NotesStream:
  """Builds the `variant` token stream of a tagged text.

  Args:
    tagged: the tagged text.
    variant: pre, post, blank or none.
    tokenizer: the base tokenizer (e.g. get_tokenizer('gpt2')).
    labels: the label inventory that fixes note ids; default tagged.labels.
      Pass `merge_labels(train, valid)` to share ids across corpora.

  Returns:
    The NotesStream.
  """
  check_variant(variant)
  if labels is None:
    labels = tagged.labels
  else:
    missing = sorted(set(tagged.labels[i] for i in np.unique(tagged.label_ids)) - set(labels))
    if missing:
      raise errors.DataError(
        f"{len(missing)} labels of this text are not in the given inventory,"
        f" e.g. {missing[:5]}; build it with merge_labels() over all texts."
      )
  base = tokenizer.vocab_size
  index = {label: i for i, label in enumerate(labels)}
  note_ids = [base + index[label] for label in tagged.labels]
  text = tagged.text
  split = _segment_splitter(tokenizer)
  ids: list[int] = []
  word_starts = np.empty(tagged.num_words, np.int64)
  prev = 0
  for w, (start, end, label_id) in enumerate(
    zip(tagged.starts.tolist(), tagged.ends.tolist(), tagged.label_ids.tolist())
  ):
    word_starts[w] = len(ids)
    space_ids, word_ids = split(text[prev:end], start - prev)
    if variant == "pre":
      ids += space_ids
      ids.append(note_ids[label_id])
      ids += word_ids
    else:
      ids += space_ids
      ids += word_ids
      if variant == "post":
        ids.append(note_ids[label_id])
      elif variant == "blank":
        ids.append(base)
    prev = end
  if prev < len(text):
    ids += tokenizer.encode(text[prev:])
  return NotesStream(
    ids=np.asarray(ids, np.uint32),
    word_starts=word_starts,
    notes=note_vocab(labels, variant),
    base_vocab_size=base,
    variant=variant,
  )


def strip_notes(ids: np.ndarray | Sequence[int], base_vocab_size: int) -> np.ndarray:
  """Drops the notes (ids >= base_vocab_size) from a token stream."""
  ids = np.asarray(ids)
  return ids[ids < base_vocab_size]


def pieces(
  ids: Iterable[int], tokenizer: Tokenizer, notes: Sequence[str], strip: bool = True
) -> list[str]:
  """Each token as text: the note string or the decoded base token."""
  base = tokenizer.vocab_size
  out = []
  for i in ids:
    i = int(i)
    piece = notes[i - base] if i >= base else tokenizer.decode([i])
    out.append(piece.strip() if strip else piece)
  return out


def plain_agreement(tagged: TaggedText, tokenizer: Tokenizer) -> float:
  """Fraction of `tokenizer.encode(text)` tokens also in the `none` stream.

  A token counts when the `none` stream has a token with the same bytes at the
  same byte offset; 1.0 when every spaCy word boundary is also a boundary of
  the base tokenizer's pre-tokenizer. Needs a tiktoken-backed tokenizer
  (`tokenizer.encoding`).
  """

  def spans(ids: Sequence[int]) -> set[tuple[int, int]]:
    lens = np.array([len(b) for b in tokenizer.encoding.decode_tokens_bytes(list(ids))], np.int64)
    ends = np.cumsum(lens)
    return set(zip((ends - lens).tolist(), ends.tolist()))

  plain = spans(tokenizer.encode(tagged.text))
  if not plain:
    return 1.0
  ours = spans(weave(tagged, "none", tokenizer).ids.tolist())
  return len(plain & ours) / len(plain)


def tagging_scheme(variant: str, scheme: str) -> str:
  """The scheme a variant needs tagged: blank/none need only word boundaries."""
  check_variant(variant)
  check_scheme(scheme)
  return "blank" if variant in ("blank", "none") else scheme


def build(
  text: str,
  variant: str,
  tokenizer: Tokenizer,
  model: str = DEFAULT_MODEL,
  scheme: str = "tag",
  **tag_kwargs: Any,
) -> tuple[TaggedText, NotesStream]:
  """Tags `text` as `variant` needs (see tag_text's kwargs) and weaves it."""
  tagged = tag_text(text, model, tagging_scheme(variant, scheme), **tag_kwargs)
  return tagged, weave(tagged, variant, tokenizer)
