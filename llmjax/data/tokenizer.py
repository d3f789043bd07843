"""Tokenizers behind one small interface.

``get_tokenizer(name)`` understands:

* ``gpt2``: GPT-2's byte-level BPE through tiktoken (vocab 50257, ``<|endoftext|>`` =
  50256), built offline from the ``gpt2_bpe`` asset (see ``llmjax.assets``).
* ``char``: UTF-8 bytes (ids 0..255) plus an end-of-text id 256; vocab 257.
* ``bpe:<path/to/tokenizer.json>``: any Hugging Face ``tokenizers`` file; its end-of-text
  token is the first special token among ``EOT_CANDIDATES``.

``<|endoftext|>`` handling is explicit: by default a literal ``"<|endoftext|>"`` in the
text is encoded as ordinary text; with ``allow_eot=True`` it becomes ``eot_id``.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import tiktoken
import tokenizers
from tiktoken_ext import openai_public

from llmjax.util import assets, errors

EOT_TEXT = "<|endoftext|>"
EOT_CANDIDATES = (EOT_TEXT, "</s>", "<|end_of_text|>", "<eos>", "[SEP]", "<|eot_id|>")
_NUM_THREADS = max(1, min(8, os.cpu_count() or 1))
# What follows a prompt when `encode_prompt` tokenizes it as running text.
_PROBE_WORD = "The"


class Tokenizer(abc.ABC):
  """Text <-> token ids.

  Attributes:
    name: the name `get_tokenizer` knows it by.
    vocab_size: number of ids (all ids are < vocab_size).
    eot_id: the end-of-text id, put between documents.
    fingerprint: changes whenever the mapping could (for caches of token ids).
  """

  name: str
  vocab_size: int
  eot_id: int
  fingerprint: str

  @abc.abstractmethod
  def encode(self, text: str, *, allow_eot: bool = False) -> list[int]:
    """Token ids of `text`; `allow_eot` maps a literal EOT_TEXT to `eot_id`."""

  def encode_batch(self, texts: Sequence[str], *, allow_eot: bool = False) -> list[list[int]]:
    """`encode` over many texts (in parallel where the backend can)."""
    return [self.encode(t, allow_eot=allow_eot) for t in texts]

  @abc.abstractmethod
  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`; bytes that are not valid UTF-8 become U+FFFD."""

  def encode_prompt(self, text: str) -> list[int]:
    """Ids of a prompt as the model saw the same text in training, with more text after it.

    A pre-tokenizer that groups whitespace (GPT-2's) writes the paragraph break of
    "line\n\nNext" as two "\n" tokens, but a text ending in "\n\n" as one "\n\n"
    token that a book without triple line breaks never contains. So a prompt ending in
    whitespace is encoded with a word after it, then cut back to the prompt's own tokens;
    when no such cut decodes to the prompt exactly (a space that joins the next word),
    the plain encoding is kept.
    """
    if text and text[-1].isspace():
      probe = self.encode(text + _PROBE_WORD, allow_eot=True)
      for cut in range(len(probe) - 1, max(0, len(probe) - 4), -1):
        if self.decode(probe[:cut]) == text:
          return probe[:cut]
    return self.encode(text, allow_eot=True)

  @property
  def dtype(self) -> np.dtype:
    """The smallest unsigned dtype that holds every id."""
    return np.dtype(np.uint16 if self.vocab_size <= 1 << 16 else np.uint32)

  def __repr__(self) -> str:
    return (
      f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size}, "
      f"eot_id={self.eot_id})"
    )


def _int_list(ids: Iterable[int]) -> list[int]:
  return ids.tolist() if isinstance(ids, np.ndarray) else [int(i) for i in ids]


class TiktokenTokenizer(Tokenizer):
  """A tiktoken `Encoding`."""

  def __init__(self, encoding, name: str | None = None, fingerprint: str | None = None):
    self.encoding = encoding
    self.name = name or encoding.name
    self.vocab_size = encoding.n_vocab
    self.eot_id = encoding.eot_token
    self.fingerprint = fingerprint or f"tiktoken:{encoding.name}"
    self._eot = {EOT_TEXT} & set(encoding.special_tokens_set)

  def encode(self, text: str, *, allow_eot: bool = False) -> list[int]:
    if allow_eot:
      return self.encoding.encode(text, allowed_special=self._eot)
    return self.encoding.encode_ordinary(text)

  def encode_batch(self, texts: Sequence[str], *, allow_eot: bool = False) -> list[list[int]]:
    texts = list(texts)
    if allow_eot:
      return self.encoding.encode_batch(texts, allowed_special=self._eot, num_threads=_NUM_THREADS)
    return self.encoding.encode_ordinary_batch(texts, num_threads=_NUM_THREADS)

  def decode(self, ids: Iterable[int]) -> str:
    return self.encoding.decode(_int_list(ids), errors="replace")


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes as ids 0..255, end-of-text 256."""

  def __init__(self):
    self.name = "char"
    self.vocab_size = 257
    self.eot_id = 256
    self.fingerprint = "utf8-bytes+eot"

  def encode(self, text: str, *, allow_eot: bool = False) -> list[int]:
    if allow_eot and EOT_TEXT in text:
      ids = []
      for i, part in enumerate(text.split(EOT_TEXT)):
        if i:
          ids.append(self.eot_id)
        ids.extend(part.encode("utf-8"))
      return ids
    return list(text.encode("utf-8"))

  def decode(self, ids: Iterable[int]) -> str:
    ids = _int_list(ids)
    if self.eot_id not in ids:
      return bytes(ids).decode("utf-8", errors="replace")
    parts, start = [], 0
    for i, t in enumerate(ids + [self.eot_id]):
      if t == self.eot_id:
        parts.append(bytes(ids[start:i]).decode("utf-8", errors="replace"))
        start = i + 1
    return EOT_TEXT.join(parts)


class HFTokenizer(Tokenizer):
  """A Hugging Face `tokenizers` tokenizer.json."""

  def __init__(self, path: str | os.PathLike[str]):
    path = Path(path).expanduser()
    if not path.is_file():
      raise errors.DataFileNotFoundError(
        f"tokenizer file {str(path)!r} does not exist; 'bpe:<path>' needs the path of "
        f"a Hugging Face tokenizer.json"
      )
    self.name = f"bpe:{path}"
    self.fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()
    # Two copies: one matches special tokens in text, one encodes them as text.
    self._special = tokenizers.Tokenizer.from_file(str(path))
    self._plain = tokenizers.Tokenizer.from_file(str(path))
    self._plain.encode_special_tokens = True
    self.vocab_size = self._special.get_vocab_size(with_added_tokens=True)
    specials = {
      t.content: i for i, t in self._special.get_added_tokens_decoder().items() if t.special
    }
    eot = next((c for c in EOT_CANDIDATES if c in specials), None)
    if eot is None:
      raise errors.DataError(
        f"tokenizer {str(path)!r} has none of the end-of-text special tokens "
        f"{list(EOT_CANDIDATES)} (its special tokens: {sorted(specials)}); add "
        f"{EOT_TEXT!r} as a special token when training it"
      )
    self.eot_text = eot
    self.eot_id = specials[eot]

  def _tok(self, allow_eot: bool):
    return self._special if allow_eot else self._plain

  def encode(self, text: str, *, allow_eot: bool = False) -> list[int]:
    return self._tok(allow_eot).encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str], *, allow_eot: bool = False) -> list[list[int]]:
    encs = self._tok(allow_eot).encode_batch(list(texts), add_special_tokens=False)
    return [e.ids for e in encs]

  def decode(self, ids: Iterable[int]) -> str:
    return self._special.decode(_int_list(ids), skip_special_tokens=False)


def _gpt2_encoding():
  # tiktoken's own "gpt2" reads encoder.json + vocab.bpe; r50k_base's ranks file
  # holds the same ranks, and the regex and special token are the same too.
  return tiktoken.Encoding(
    name="gpt2",
    pat_str=openai_public.r50k_pat_str,
    mergeable_ranks=assets.gpt2_bpe_ranks(),
    special_tokens={EOT_TEXT: 50256},
    explicit_n_vocab=50257,
  )


@functools.lru_cache(maxsize=16)
def get_tokenizer(name: str) -> Tokenizer:
  """Returns the tokenizer called `name`: 'gpt2', 'char' or 'bpe:<tokenizer.json>'."""
  if name == "gpt2":
    return TiktokenTokenizer(_gpt2_encoding(), fingerprint=assets.GPT2_BPE_SHA256)
  if name == "char":
    return ByteTokenizer()
  if name.startswith("bpe:") and len(name) > 4:
    return HFTokenizer(name[4:])
  raise errors.DataError(
    f"unknown tokenizer {name!r}; valid: 'gpt2', 'char', 'bpe:<path/to/tokenizer.json>'"
  )
