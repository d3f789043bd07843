"""Tests for llmjax.data.shards."""

import json

import numpy as np
import pytest

from llmjax.config import schema as config_schema
from llmjax.data import shards, sources
from llmjax.data.tokenizer import get_tokenizer
from llmjax.util import assets, errors


def cfg(**kw):
  c = config_schema.base_config().data
  c.update(kw)
  return c


@pytest.fixture
def book(tmp_path):
  path = tmp_path / "book.txt"
  lines = [f"Line {i}: the quick brown fox.\n" for i in range(100)]  # 2990 bytes.
  path.write_text("".join(lines))
  return path


@pytest.fixture
def count_tokenize(monkeypatch):
  calls = []
  real = shards.tokenize_text

  def counting(*args, **kwargs):
    calls.append(1)
    return real(*args, **kwargs)

  monkeypatch.setattr(shards, "tokenize_text", counting)
  return calls


def test_prepare_char_exact(book, tmp_path):
  splits = shards.prepare_tokens(
    cfg(source="file", path=str(book), tokenizer="char"), tmp_path / "cache", progress=False
  )
  raw = np.frombuffer(book.read_bytes(), np.uint8)
  assert splits.train.dtype == np.uint16 and isinstance(splits.train, np.memmap)
  np.testing.assert_array_equal(np.concatenate([splits.train, splits.val]), raw)
  # Validation is the last 10% (2990 bytes -> 299, from byte 2691), moved forward to
  # the next line start: line 90 starts at byte 10 * 29 + 80 * 30 = 2690, line 91 at 2720.
  assert len(splits.train) == 2720 and len(splits.val) == 270
  assert bytes(splits.val[:8].tolist()) == b"Line 91:"
  m = splits.manifest
  assert (m["tokenizer"], m["vocab_size"], m["eot_id"], m["dtype"]) == ("char", 257, 256, "uint16")
  assert (m["n_train"], m["n_val"], m["val_fraction"]) == (2720, 270, 0.1)
  assert m["format_version"] == shards.FORMAT_VERSION
  assert (
    m["source_fingerprint"] == sources.read_source(cfg(source="file", path=str(book))).fingerprint
  )
  assert splits.dir.parent == tmp_path / "cache" / "tokens"
  assert splits.dir.name == m["key"]
  assert json.loads((splits.dir / "manifest.json").read_text()) == m
  assert sorted(p.name for p in splits.dir.iterdir()) == ["manifest.json", "train.bin", "val.bin"]
  assert [p.name for p in (tmp_path / "cache" / "tokens").iterdir()] == [m["key"]]


def test_prepare_reuses_and_rebuilds(book, tmp_path, count_tokenize):
  c = cfg(source="file", path=str(book), tokenizer="char")
  first = shards.prepare_tokens(c, tmp_path, progress=False)
  again = shards.prepare_tokens(c, tmp_path, progress=False)
  assert len(count_tokenize) == 1
  assert again.dir == first.dir
  np.testing.assert_array_equal(again.val, first.val)
  # A different val_fraction or tokenizer is another cache entry ...
  other = shards.prepare_tokens(
    cfg(source="file", path=str(book), tokenizer="char", val_fraction=0.2), tmp_path, progress=False
  )
  assert len(count_tokenize) == 2 and other.dir != first.dir
  # ... and so is a changed source.
  book.write_text(book.read_text() + "One more line.\n")
  changed = shards.prepare_tokens(c, tmp_path, progress=False)
  assert len(count_tokenize) == 3 and changed.dir != first.dir
  assert changed.manifest["n_train"] + changed.manifest["n_val"] == 2990 + 15


def test_prepare_gpt2_shakespeare(tmp_path):
  assets.fetch("shakespeare")
  splits = shards.prepare_tokens(cfg(), tmp_path, progress=False)
  gpt2 = get_tokenizer("gpt2")
  assert splits.manifest["n_train"] + splits.manifest["n_val"] == 1_566_041
  assert splits.manifest["n_val"] == pytest.approx(156_604, abs=200)
  assert splits.train[:8].tolist() == gpt2.encode(assets.shakespeare_text()[:200])[:8]
  assert gpt2.decode(splits.train[-1:]).endswith("\n")
  assert splits.train.dtype == np.uint16


def test_chunked_tokenization_equals_whole():
  """Chunk boundaries never change GPT-2 ids (1 MB of Shakespeare, 4 kB chunks)."""
  assets.fetch("shakespeare")
  text = assets.shakespeare_text()[:1_000_000]
  gpt2 = get_tokenizer("gpt2")
  ids = shards.tokenize_text(text, gpt2, chunk_chars=4096, progress=False)
  assert ids.dtype == np.uint16
  assert ids.tolist() == gpt2.encode(text)
  assert len(list(shards._chunks(text, 4096))) > 200


def test_split_too_small(tmp_path):
  (tmp_path / "tiny.txt").write_text("ab")
  with pytest.raises(
    ValueError,
    match=r"gives 2 tokens.*2 for training and 0 for "
    r"validation \(val_fraction=0\.1\)",
  ):
    shards.prepare_tokens(
      cfg(source="file", path=str(tmp_path / "tiny.txt"), tokenizer="char"),
      tmp_path,
      progress=False,
    )
  assert not (tmp_path / "tokens").exists()


@pytest.mark.parametrize("fraction", [1.0, -0.1])
def test_bad_val_fraction(book, tmp_path, fraction):
  with pytest.raises(
    errors.ConfigError, match=r"data.val_fraction=.* must be a number in \[0, 1\)"
  ):
    shards.prepare_tokens(
      cfg(source="file", path=str(book), val_fraction=fraction), tmp_path, progress=False
    )
  assert not (tmp_path / "tokens").exists()


@pytest.mark.parametrize("fraction", [True, "0.1", None, 2])
def test_check_val_fraction_rejects_non_fractions(fraction):
  with pytest.raises(errors.ConfigError, match=r"must be a number in \[0, 1\)"):
    shards.check_val_fraction(fraction)
  assert shards.check_val_fraction(0) == 0.0 and shards.check_val_fraction(0.5) == 0.5


def test_val_fraction_zero_trains_on_the_whole_text(book, tmp_path):
  splits = shards.prepare_tokens(
    cfg(source="file", path=str(book), tokenizer="char", val_fraction=0), tmp_path, progress=False
  )
  assert len(splits.train) == book.stat().st_size and splits.val_is_train
  assert splits.val is splits.train
  assert sorted(p.name for p in splits.dir.iterdir()) == ["manifest.json", "train.bin"]
  assert (splits.manifest["n_val"], splits.manifest["val_fraction"]) == (0, 0.0)
  again = shards.load_token_splits(splits.dir)
  assert again.val_is_train and len(again.val) == len(splits.train)
  held_out = shards.prepare_tokens(
    cfg(source="file", path=str(book), tokenizer="char"), tmp_path, progress=False
  )
  assert not held_out.val_is_train and held_out.dir != splits.dir


def test_failed_write_leaves_nothing(book, tmp_path, monkeypatch):
  def broken(path, array):
    raise OSError("disk full")

  monkeypatch.setattr(shards, "write_array", broken)
  with pytest.raises(OSError, match="disk full"):
    shards.prepare_tokens(
      cfg(source="file", path=str(book), tokenizer="char"), tmp_path, progress=False
    )
  assert not list((tmp_path / "tokens").iterdir())


def test_truncated_token_file_is_detected(book, tmp_path):
  splits = shards.prepare_tokens(
    cfg(source="file", path=str(book), tokenizer="char"), tmp_path, progress=False
  )
  path = splits.dir / "val.bin"
  path.write_bytes(path.read_bytes()[:-2])
  with pytest.raises(ValueError, match=r"val\.bin has 538 bytes.*270 uint16 ids"):
    shards.load_token_splits(splits.dir)


def test_write_token_shards(tmp_path):
  out = tmp_path / "toks"
  docs = (d for d in ["ab", "", "c", "de"])
  entry = shards.write_token_shards(docs, out, "char", docs_per_batch=2, progress=False)
  assert entry == {"file": "train.bin", "n_tokens": 7, "n_docs": 3}
  assert np.fromfile(out / "train.bin", np.uint16).tolist() == [97, 98, 256, 99, 256, 100, 101]
  shards.write_token_shards(["xyz"], out, get_tokenizer("char"), split="val", progress=False)
  splits = shards.load_token_splits(out)
  assert splits.val.tolist() == [120, 121, 122]
  assert (splits.manifest["n_train"], splits.manifest["n_val"]) == (7, 3)
  assert splits.manifest["splits"]["train"]["n_docs"] == 3
  assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_write_token_shards_max_tokens(tmp_path):
  docs = iter(["abc"] * 1000)
  entry = shards.write_token_shards(
    docs, tmp_path, "char", split="train", docs_per_batch=4, max_tokens=10, progress=False
  )
  assert entry["n_tokens"] == 10 and entry["n_docs"] == 3
  assert np.fromfile(tmp_path / "train.bin", np.uint16).tolist() == [
    97,
    98,
    99,
    256,
    97,
    98,
    99,
    256,
    97,
    98,
  ]
  assert len(list(docs)) >= 990  # Stopped reading early.


def test_write_token_shards_errors(tmp_path):
  with pytest.raises(ValueError, match=r"no tokens for split 'train'"):
    shards.write_token_shards(["", ""], tmp_path, "char", progress=False)
  assert not list(tmp_path.iterdir())
  shards.write_token_shards(["a"], tmp_path, "char", progress=False)
  with pytest.raises(ValueError, match=r"written with tokenizer 'char', not 'gpt2'"):
    shards.write_token_shards(["a"], tmp_path, "gpt2", split="val", progress=False)
  with pytest.raises(ValueError, match=r"has no split 'val'; it has \['train'\]"):
    shards.load_token_splits(tmp_path)
  with pytest.raises(FileNotFoundError, match=r"no manifest\.json"):
    shards.load_token_splits(tmp_path / "nope")
