"""Tests for llmjax.data.wikitext on a small local dataset in the hub's format."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from llmjax.config import schema as config_schema
from llmjax.data import registry, shards, wikitext
from llmjax.data.tokenizer import get_tokenizer

# The first rows of wikitext-2-raw-v1's train split, as the dataset stores them.
HEAD = [
  "",
  " = Valkyria Chronicles III = \n",
  "",
  " Senjō no Valkyria 3 : Unrecorded Chronicles ( Japanese : 戦場のヴァルキュリア3 , lit . "
  "Valkyria of the Battlefield 3 ) , commonly referred to as Valkyria Chronicles III "
  "outside Japan , is a tactical role @-@ playing video game . \n",
  "",
]
GAMEPLAY = [" = = Gameplay = = \n", "", " The game plays like its predecessors . \n", ""]
SPLIT_ROWS = {
  "train": HEAD + GAMEPLAY + GAMEPLAY + ["   ", " The end . \n"],  # Header twice.
  "validation": ["", " = Homarus gammarus = \n", "", " Homarus gammarus is a lobster . \n"],
  "test": ["", " = Robert Boulter = \n", "", " Robert Boulter is an actor . \n", ""],
}


def write_dataset(root, fmt="parquet"):
  """The hub repository's layout: <root>/wikitext-2-raw-v1/<split>-00000-of-00001.<fmt>
  (or a save_to_disk directory <root>/wikitext-2-raw-v1)."""
  d = root / "wikitext-2-raw-v1"
  d.mkdir(parents=True)
  if fmt == "disk":
    import datasets

    datasets.DatasetDict(
      {split: datasets.Dataset.from_dict({"text": rows}) for split, rows in SPLIT_ROWS.items()}
    ).save_to_disk(str(d))
    return d
  for split, rows in SPLIT_ROWS.items():
    frame = pd.DataFrame({"text": rows})
    if fmt == "parquet":
      frame.to_parquet(d / f"{split}-00000-of-00001.parquet")
    else:
      frame.to_json(d / f"{split}.jsonl", orient="records", lines=True, force_ascii=False)
  return root


def cfg(**kw):
  c = config_schema.base_config().data
  c.update(source="wikitext2", **kw)
  return c


def expected_text(rows):
  return "\n".join(r for r in rows if r)


def test_join_rows_drops_empty_strings_keeps_duplicates_and_blank_rows():
  # The original's filter drops "" only; a row of spaces stays (and is counted).
  text, n_rows, n_kept = wikitext.join_rows(["", " = A = \n", "", " = A = \n", "  ", " b \n", None])
  assert (n_rows, n_kept) == (7, 4)
  assert text == " = A = \n\n = A = \n\n  \n b \n"


# Counted by hand from SPLIT_ROWS: rows, unique, empty strings, rows of only whitespace,
# most frequent row and its count, repeats of an earlier kept row, and how many repeats
# are headers.
HAND_COUNTED = {
  "train": {
    "rows": 15,
    "unique": 7,
    "empty": 7,
    "whitespace_only": 1,
    "most_frequent": "",
    "most_frequent_count": 7,
    "duplicated": 2,
    "duplicated_headers": 1,
  },
  "validation": {
    "rows": 4,
    "unique": 3,
    "empty": 2,
    "whitespace_only": 0,
    "most_frequent": "",
    "most_frequent_count": 2,
    "duplicated": 0,
    "duplicated_headers": 0,
  },
  "test": {
    "rows": 5,
    "unique": 3,
    "empty": 3,
    "whitespace_only": 0,
    "most_frequent": "",
    "most_frequent_count": 3,
    "duplicated": 0,
    "duplicated_headers": 0,
  },
}


def test_row_statistics_match_a_hand_count():
  for split, rows in SPLIT_ROWS.items():
    assert wikitext.row_statistics(rows) == HAND_COUNTED[split], split
  stats = wikitext.row_statistics(
    [
      " = A = \n",
      " x = 1 \n",
      " x = 1 \n",
      " = A = \n",
      None,
      " = = B = = \n",
      " = = B = = \n",
      " = = B = = \n",
    ]
  )
  assert stats == {
    "rows": 8,
    "unique": 4,
    "empty": 1,
    "whitespace_only": 0,
    "most_frequent": " = = B = = \n",
    "most_frequent_count": 3,
    "duplicated": 4,
    "duplicated_headers": 3,
  }


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "disk"])
def test_prepare_tokenizes_each_split(tmp_path, capsys, fmt):
  data = write_dataset(tmp_path / "wikitext", fmt)
  splits = wikitext.prepare_wikitext(cfg(path=str(data)), tmp_path / "cache", progress=False)
  gpt2 = get_tokenizer("gpt2")
  for name, hf_split in wikitext.SPLITS.items():
    want = gpt2.encode(expected_text(SPLIT_ROWS[hf_split]))
    got = shards.optional_split(splits, name)
    np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(splits.train, shards.optional_split(splits, "train"))
  np.testing.assert_array_equal(splits.val, shards.optional_split(splits, "val"))
  # The documented start of the real train tokens.
  assert tuple(splits.train[:13].tolist()) == wikitext.ORIGINAL_TRAIN_PREFIX
  train = splits.manifest["splits"]["train"]
  assert (train["n_rows"], train["n_rows_kept"]) == (15, 8)  # The row of spaces is kept.
  assert gpt2.decode(splits.train).count(" = = Gameplay = = \n") == 2
  out = capsys.readouterr().out
  assert "validation" in out and f"{len(splits.val):>11,}" in out
  for name, hf_split in wikitext.SPLITS.items():
    assert splits.manifest["splits"][name]["row_stats"] == HAND_COUNTED[hf_split]
  assert '  train             15         7         7       1           2         1  "" (7)' in out


def test_loader_dispatch_and_cache(tmp_path, monkeypatch):
  data = write_dataset(tmp_path / "wikitext")
  first = registry.prepare_tokens(
    cfg(path=str(data / "wikitext-2-raw-v1")), tmp_path / "cache", progress=False
  )
  calls = []
  monkeypatch.setattr(shards, "tokenize_text", lambda *a, **k: calls.append(1))
  again = registry.prepare_tokens(cfg(path=str(data)), tmp_path / "cache", progress=False)
  assert calls == [] and again.dir == first.dir
  assert sorted(p.name for p in first.dir.iterdir()) == [
    "manifest.json",
    "test.bin",
    "train.bin",
    "val.bin",
  ]
  manifest = json.loads((first.dir / "manifest.json").read_text())
  assert manifest["n_val"] == len(first.val) and manifest["hf_config"] == "wikitext-2-raw-v1"


def test_missing_path_is_clear(tmp_path):
  with pytest.raises(FileNotFoundError, match="data.path .* does not exist"):
    wikitext.prepare_wikitext(cfg(path=str(tmp_path / "nope")), tmp_path / "cache")


def test_expected_counts_check():
  manifest = {
    "tokenizer": "gpt2",
    "hf_config": "wikitext-2-raw-v1",
    "splits": {
      "train": {"n_rows": 36_718, "n_rows_kept": 23_767, "n_tokens": 2_391_884},
      "val": {"n_tokens": 247_289},
      "test": {"n_tokens": 283_287},
    },
  }
  wikitext._check_expected(manifest)  # Matches: silent.
  manifest["splits"]["test"]["n_tokens"] = 1
  with pytest.warns(UserWarning, match="differ from the original study"):
    wikitext._check_expected(manifest)


@pytest.mark.slow
def test_wikitext2_config_trains_and_reports_test_perplexity(tmp_path):
  from llmjax.config import load as config_load
  from llmjax.runs import report
  from llmjax.train import lm

  root = tmp_path / "wikitext" / "wikitext-2-raw-v1"
  root.mkdir(parents=True)
  sentence = " The game plays like its predecessors , with a few changes . \n"
  for split, n in (("train", 120), ("validation", 30), ("test", 40)):
    rows = [" = Heading = \n", ""] + [sentence, ""] * n
    pd.DataFrame({"text": rows}).to_parquet(root / f"{split}-00000-of-00001.parquet")
  config = config_load.load_config("configs/wikitext2.py:smoke").unlock()
  config_load.apply_overrides(
    config,
    {
      "data.path": str(root.parent),
      "train.steps": 2,
      "train.eval_every": 2,
      "train.sample_tokens": 0,
    },
  )
  result = lm.train(config, tmp_path / "run")
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["status"] == "finished" and summary["test_loss"] == result.test_loss
  assert summary["test_perplexity"] == pytest.approx(np.exp(result.test_loss))
  assert 0 < result.test_loss < np.log(50304) + 1
  val_text = "\n".join([" = Heading = \n"] + [sentence] * 30)
  assert summary["n_val_tokens"] == len(get_tokenizer("gpt2").encode(val_text))
  row = report.run_row(report.load_run(tmp_path / "run"))
  assert row["test_perplexity"] == summary["test_perplexity"]


def test_shakespeare_stand_in_has_wikitext_layout(tmp_path):
  rows = wikitext.shakespeare_rows()
  assert rows["validation"][:4] == ["", " = Lovers Complaint = \n", "", " A LOVER'S COMPLAINT \n"]
  assert rows["test"][:2] == ["", " = Passionate Pilgrim = \n"]
  assert rows["train"][1] == " = Alls Well That Ends Well = \n"
  headers = [r for r in rows["train"] if r.startswith(" = ") and r.endswith(" = \n")]
  assert len(headers) == 40
  assert all(
    r == "" or (r.startswith(" ") and r.endswith(" \n") and "\n" not in r[:-1])
    for split in rows.values()
    for r in split
  )
  splits = registry.prepare_tokens(
    cfg(path=wikitext.SHAKESPEARE_PATH, tokenizer="char"), tmp_path / "cache", progress=False
  )
  texts = wikitext.read_splits(wikitext.SHAKESPEARE_PATH)
  assert [len(splits.train), len(splits.val), len(shards.optional_split(splits, "test"))] == [
    len(texts[name][0].encode("utf-8")) for name in ("train", "val", "test")
  ]


def test_statistics_table_shows_measured_rows_beside_the_original_figures(tmp_path):
  data = write_dataset(tmp_path / "wikitext")
  splits = wikitext.prepare_wikitext(cfg(path=str(data)), tmp_path / "cache", progress=False)
  table = wikitext.statistics_table(splits.manifest)
  # Measured from the fixture: train has 15 rows, 7 empty strings, one row of spaces.
  assert re.search(r"train\s+15\s+7\s+7\s+1\s+2\s+1", table), table
  assert "original study's figures" in table and "not measured here" in table
  assert "36,718 rows, 21,714 unique, 23,767 kept" in table
