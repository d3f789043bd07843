"""Tests for llmjax.data.tokenizer."""

import numpy as np
import pytest

from llmjax.data import tokenizer as tokenizer_lib
from llmjax.data.tokenizer import EOT_TEXT, get_tokenizer

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak."


@pytest.fixture(scope="module")
def gpt2():
  return get_tokenizer("gpt2")


@pytest.fixture(scope="module")
def bpe_path(tmp_path_factory):
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top

  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=300,
    special_tokens=["[PAD]", EOT_TEXT],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator([TEXT] * 20, trainer=trainer)
  path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
  tok.save(str(path))
  return path


def test_gpt2_known_ids(gpt2):
  assert gpt2.name == "gpt2"
  assert gpt2.vocab_size == 50257
  assert gpt2.eot_id == 50256
  assert gpt2.dtype == np.uint16
  assert gpt2.encode("Hello world") == [15496, 995]
  assert gpt2.encode(" the,\n\n") == [262, 11, 628]
  assert gpt2.encode(".\n\nA") == [13, 198, 198, 32]
  assert gpt2.decode([15496, 995]) == "Hello world"
  assert gpt2.decode(np.array([15496, 995], np.uint16)) == "Hello world"


def test_gpt2_round_trip(gpt2):
  text = TEXT + " Ünïcödé — 東京 🎭 tabs\tand  spaces  \n"
  assert gpt2.decode(gpt2.encode(text)) == text
  assert gpt2.encode_batch([TEXT, "Hello world", ""]) == [gpt2.encode(TEXT), [15496, 995], []]


def test_gpt2_eot_is_explicit(gpt2):
  text = f"a{EOT_TEXT}b"
  plain = gpt2.encode(text)
  assert 50256 not in plain and gpt2.decode(plain) == text
  assert gpt2.encode(text, allow_eot=True) == [64, 50256, 65]
  assert gpt2.encode_batch([text], allow_eot=True) == [[64, 50256, 65]]
  assert gpt2.encode_batch([text]) == [plain]
  assert gpt2.decode([64, 50256, 65]) == text


def test_prompt_ending_in_a_paragraph_break_is_encoded_as_in_running_text(gpt2):
  # "\n\n" alone is one token (628); before a word it is two "\n" (198): the book's form.
  assert gpt2.encode("line\n\n") == [1370, 628]
  assert gpt2.encode_prompt("line\n\n") == [1370, 198, 198]
  assert gpt2.encode("line\n\nThese")[:3] == gpt2.encode_prompt("line\n\n")
  assert gpt2.encode_prompt("line\n\n\n") == gpt2.encode("line\n\n\nA")[:-1]
  # A trailing space joins the next word: no cut decodes to the prompt, the plain ids stay.
  assert gpt2.encode_prompt("The quick ") == gpt2.encode("The quick ")
  assert gpt2.encode_prompt("Hello world") == [15496, 995]
  assert gpt2.encode_prompt(f"a{EOT_TEXT}\n\n") == [64, 50256, 198, 198]
  assert get_tokenizer("char").encode_prompt("a\n\n") == [97, 10, 10]


def test_gpt2_is_cached(gpt2):
  assert get_tokenizer("gpt2") is gpt2


def test_char():
  tok = get_tokenizer("char")
  assert (tok.name, tok.vocab_size, tok.eot_id, tok.dtype) == ("char", 257, 256, np.uint16)
  assert tok.encode("Hi é") == [72, 105, 32, 0xC3, 0xA9]
  assert tok.decode([72, 105, 32, 0xC3, 0xA9]) == "Hi é"
  assert tok.encode(f"a{EOT_TEXT}b", allow_eot=True) == [97, 256, 98]
  assert tok.encode(f"a{EOT_TEXT}b") == list(f"a{EOT_TEXT}b".encode())
  assert tok.decode([97, 256, 98, 256]) == f"a{EOT_TEXT}b{EOT_TEXT}"
  assert tok.decode([0xC3]) == "\ufffd"
  assert tok.encode_batch(["a", "bc"]) == [[97], [98, 99]]


def test_hf_bpe(bpe_path):
  tok = get_tokenizer(f"bpe:{bpe_path}")
  assert tok.name == f"bpe:{bpe_path}"
  assert tok.eot_id == 1 and tok.vocab_size == 300
  ids = tok.encode(TEXT)
  assert len(ids) < len(TEXT) // 2  # Merges were learnt.
  assert tok.decode(ids) == TEXT
  assert tok.encode_batch([TEXT, "Speak"]) == [ids, tok.encode("Speak")]
  text = f"Speak{EOT_TEXT}speak"
  assert tok.encode(text, allow_eot=True) == (tok.encode("Speak") + [1] + tok.encode("speak"))
  assert 1 not in tok.encode(text)
  assert tok.decode(tok.encode(text)) == text


def test_hf_bpe_without_eot(tmp_path):
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import models  # pylint: disable=g-import-not-at-top

  path = tmp_path / "t.json"
  tokenizers.Tokenizer(models.BPE(vocab={"a": 0}, merges=[])).save(str(path))
  with pytest.raises(ValueError, match=r"none of the end-of-text special tokens"):
    tokenizer_lib.HFTokenizer(path)


def test_errors(tmp_path):
  with pytest.raises(ValueError, match=r"unknown tokenizer 'gpt3'.*'gpt2', 'char'"):
    get_tokenizer("gpt3")
  with pytest.raises(FileNotFoundError, match=r"nope\.json' does not exist"):
    get_tokenizer(f"bpe:{tmp_path}/nope.json")


def test_dtype_for_large_vocab():
  big = tokenizer_lib.ByteTokenizer()
  big.vocab_size = 65537
  assert big.dtype == np.uint32
  big.vocab_size = 65536
  assert big.dtype == np.uint16
