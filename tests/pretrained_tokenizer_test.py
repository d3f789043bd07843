"""Encoder tokenizers built from tokenizer.json, vocab.txt or vocab.json + merges.txt."""

import json

import pytest
import tokenizers

from llmjax.pretrained import load_tokenizer

WORDPIECE_VOCAB = [
  "[PAD]",
  "[UNK]",
  "[CLS]",
  "[SEP]",
  "[MASK]",
  "the",
  "cat",
  "Cat",
  "sat",
  "##s",
  "play",
  "##ing",
  ",",
  "!",
]


def _write_vocab(directory, lower_case=None):
  directory.mkdir()
  (directory / "vocab.txt").write_text("\n".join(WORDPIECE_VOCAB) + "\n")
  if lower_case is not None:
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lower_case}))
  return directory


def test_wordpiece_from_vocab_txt(tmp_path):
  tok = load_tokenizer(_write_vocab(tmp_path / "lower"))
  enc = tok.encode("The cats, playing!", "Sat dog")
  assert enc.tokens == [
    "[CLS]",
    "the",
    "cat",
    "##s",
    ",",
    "play",
    "##ing",
    "!",
    "[SEP]",
    "sat",
    "[UNK]",
    "[SEP]",
  ]
  assert enc.type_ids == [0] * 9 + [1] * 3
  assert tok.decode(enc.ids) == "the cats, playing! sat"


def test_wordpiece_respects_do_lower_case(tmp_path):
  tok = load_tokenizer(_write_vocab(tmp_path / "cased", lower_case=False))
  assert tok.encode("Cat cat").tokens == ["[CLS]", "Cat", "cat", "[SEP]"]


def test_bytelevel_bpe_from_vocab_and_merges(tmp_path):
  trainer_tok = tokenizers.ByteLevelBPETokenizer()
  trainer_tok.train_from_iterator(
    ["hello world, hello there"] * 20,
    vocab_size=300,
    special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
  )
  trainer_tok.save_model(str(tmp_path))
  tok = load_tokenizer(tmp_path)
  vocab = tok.get_vocab()
  enc = tok.encode("hello world", "there")
  assert enc.ids[0] == vocab["<s>"] and enc.ids[-1] == vocab["</s>"]
  assert enc.tokens.count("</s>") == 3  # <s> A </s></s> B </s>
  assert tok.decode(tok.encode(" hello there!").ids) == " hello there!"


def test_tokenizer_json_padding_is_switched_off(tmp_path):
  base = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
  base.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  base.enable_padding(length=16)
  base.enable_truncation(max_length=16)
  base.save(str(tmp_path / "tokenizer.json"))
  assert load_tokenizer(tmp_path).encode("a a b").ids == [1, 1, 0]
  assert load_tokenizer(tmp_path, max_length=2).encode("a a b").ids == [1, 1]


def test_missing_tokenizer_files_are_listed(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match=r"expected tokenizer.json.*found \['config.json'\]"):
    load_tokenizer(tmp_path)


def test_vocab_without_special_tokens_is_refused(tmp_path):
  tmp_path.joinpath("vocab.txt").write_text("a\nb\n")
  with pytest.raises(ValueError, match=r"lacks the special token '\[CLS\]'"):
    load_tokenizer(tmp_path)
