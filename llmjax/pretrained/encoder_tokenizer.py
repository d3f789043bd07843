"""Encoder tokenizers through the `tokenizers` library.

`load_tokenizer(path_or_repo_id)` reads, in this order of preference:
  tokenizer.json            any fast tokenizer, exactly as saved;
  vocab.txt                 BERT WordPiece ([CLS] a [SEP] b [SEP]), lower-casing as
                            tokenizer_config.json says (default: lower-case);
  vocab.json + merges.txt   byte-level BPE: RoBERTa's (<s> a </s></s> b </s>), or, when
                            the vocabulary has [CLS] and [SEP] and no <s>, DeBERTa v1's
                            ([CLS] a [SEP] b [SEP], b with token type 1).
Padding and truncation saved in tokenizer.json are switched off so that every loader
behaves alike; pass `max_length` to truncate, and pad when batching.
"""

from __future__ import annotations

import json
import os
import pathlib

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from llmjax.pretrained.hf_import import resolve_model_dir
from llmjax.util import errors

_TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "vocab.txt",
  "vocab.json",
  "merges.txt",
  "config.json",
]


def _tokenizer_config(model_dir: pathlib.Path) -> dict:
  path = model_dir / "tokenizer_config.json"
  return json.loads(path.read_text()) if path.is_file() else {}


def _special(vocab: dict[str, int], token: str, path: pathlib.Path) -> tuple[str, int]:
  if token not in vocab:
    raise errors.PretrainedFormatError(f"{path} lacks the special token {token!r}")
  return token, vocab[token]


def wordpiece_from_vocab(vocab_path: pathlib.Path, lowercase: bool = True) -> tokenizers.Tokenizer:
  """A BERT WordPiece tokenizer built from a vocab.txt file."""
  return wordpiece_from_tokens(
    vocab_path.read_text(encoding="utf-8").splitlines(), lowercase, source=vocab_path
  )


def wordpiece_from_tokens(
  tokens: list[str], lowercase: bool = True, source: str | os.PathLike = "vocabulary"
) -> tokenizers.Tokenizer:
  """A BERT WordPiece tokenizer whose token i is `tokens[i]` (needs [CLS] and [SEP])."""
  vocab = {}
  for i, token in enumerate(tokens):
    vocab.setdefault(token.rstrip("\n"), i)
  tok = tokenizers.Tokenizer(
    models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100)
  )
  tok.normalizer = normalizers.BertNormalizer(
    clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
  )
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  cls, sep = _special(vocab, "[CLS]", source), _special(vocab, "[SEP]", source)
  tok.post_processor = processors.TemplateProcessing(
    single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[cls, sep]
  )
  tok.decoder = decoders.WordPiece(prefix="##")
  tok.add_special_tokens([t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t in vocab])
  return tok


def bytelevel_bpe_from_files(
  vocab_path: pathlib.Path, merges_path: pathlib.Path, add_prefix_space: bool = False
) -> tokenizers.Tokenizer:
  """A byte-level BPE tokenizer built from vocab.json and merges.txt: RoBERTa's special
  tokens and pair layout, or DeBERTa v1's when the vocabulary has [CLS] but no <s>."""
  vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
  tok = tokenizers.Tokenizer(models.BPE.from_file(str(vocab_path), str(merges_path)))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
  tok.decoder = decoders.ByteLevel()
  if "<s>" not in vocab and "[CLS]" in vocab:
    cls, sep = _special(vocab, "[CLS]", vocab_path), _special(vocab, "[SEP]", vocab_path)
    tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[cls, sep]
    )
    specials = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
  else:
    tok.post_processor = processors.RobertaProcessing(
      _special(vocab, "</s>", vocab_path),
      _special(vocab, "<s>", vocab_path),
      add_prefix_space=add_prefix_space,
    )
    specials = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
  tok.add_special_tokens([t for t in specials if t in vocab])
  return tok


def load_tokenizer(
  path_or_repo_id: str | os.PathLike, max_length: int | None = None
) -> tokenizers.Tokenizer:
  """The tokenizer of a checkpoint directory or hub repository (see module docstring)."""
  model_dir = resolve_model_dir(path_or_repo_id, _TOKENIZER_FILES)
  if (model_dir / "tokenizer.json").is_file():
    tok = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
  elif (model_dir / "vocab.txt").is_file():
    lowercase = _tokenizer_config(model_dir).get("do_lower_case", True)
    tok = wordpiece_from_vocab(model_dir / "vocab.txt", lowercase=lowercase)
  elif (model_dir / "vocab.json").is_file() and (model_dir / "merges.txt").is_file():
    add_prefix_space = _tokenizer_config(model_dir).get("add_prefix_space", False)
    tok = bytelevel_bpe_from_files(
      model_dir / "vocab.json", model_dir / "merges.txt", add_prefix_space=add_prefix_space
    )
  else:
    present = sorted(p.name for p in model_dir.iterdir())
    raise errors.PretrainedNotFoundError(
      f"no tokenizer in {model_dir}: expected tokenizer.json, vocab.txt, or vocab.json +"
      f" merges.txt; found {present}. SentencePiece-only checkpoints need a tokenizer.json"
      " (save one with any fast tokenizer)."
    )
  tok.no_padding()
  tok.no_truncation()
  if max_length is not None:
    tok.enable_truncation(max_length)
  return tok
