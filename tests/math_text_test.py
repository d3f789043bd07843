"""Math source: local stand-ins for the two HF datasets streamed into token shards."""

import itertools
import json
import math
import re

import numpy as np
import pytest

from llmjax.data import generated_math, math_text, registry, sources
from llmjax.data.tokenizer import get_tokenizer


def write_math_files(tmp_path):
  """A question/answer set (like Maths-College) and a text set (like open-web-math)."""
  college = tmp_path / "college.jsonl"
  web = tmp_path / "web.jsonl"
  with college.open("w") as f:
    for i in range(30):
      f.write(
        json.dumps(
          {"instruction": f"Differentiate x^{i}.", "output": f"The derivative is {i} x^{i - 1}."}
        )
        + "\n"
      )
  with web.open("w") as f:
    for i in range(30):
      f.write(json.dumps({"text": f"Lemma {i}. For all n, n + {i} > n.", "url": "u"}) + "\n")
  return college, web


def data_cfg(path, max_tokens, **kw):
  cfg = sources.default_data_config()
  cfg.source, cfg.path, cfg.tokenizer = "math", path, "char"
  cfg.max_tokens, cfg.val_fraction = max_tokens, 0.1
  cfg.update(kw)
  return cfg


def test_each_dataset_gives_its_share_to_both_splits(tmp_path):
  college, web = write_math_files(tmp_path)
  tok = get_tokenizer("char")
  docs = list(math_text.iter_documents([str(college), str(web)]))
  assert len(docs) == 60
  assert docs[0] == "Differentiate x^0.\n\nThe derivative is 0 x^-1."
  assert docs[30] == "Lemma 0. For all n, n + 0 > n."

  splits = registry.prepare_tokens(data_cfg(f"{college},{web}", 2000), tmp_path / "cache")
  assert splits.dir.name.startswith("math-")
  eot = tok.decode([tok.eot_id])
  per = splits.manifest["per_dataset"]
  assert [p["dataset"] for p in per] == [str(college), str(web)]
  assert [p["budget"] for p in per] == [1000, 1000]
  assert [p["val"] for p in per] == [100, 100]  # val_fraction of each share, a document cut.
  # The question set fills its share; the small text set runs out first (its rest unused).
  assert per[0]["train"] == 900 and 0 < per[1]["train"] < 900
  assert len(splits.val) == 201  # One eot joins the two datasets' parts.
  assert len(splits.train) == 901 + per[1]["train"]
  text_val = tok.decode(np.asarray(splits.val))
  text_train = tok.decode(np.asarray(splits.train))
  assert text_val.startswith(docs[0]) and "Lemma 0." in text_val
  assert "Differentiate" in text_train and "Lemma" in text_train
  assert splits.manifest["datasets"] == [str(college), str(web)]
  assert splits.manifest["n_train"] == len(splits.train)
  # Val documents never reappear in training.
  train_docs = set(text_train.split(eot))
  assert not any(doc in train_docs for doc in text_val.split(eot)[:-1])


def test_default_datasets_are_both_read_under_the_default_budgets(tmp_path, monkeypatch):
  # Stand-ins for the two hub datasets, each far larger than data.max_tokens: read in
  # turn to the cap, the second would never be reached.
  def endless(dataset_id, config, split, streaming):
    assert streaming and dataset_id in math_text.DEFAULT_DATASETS
    name = dataset_id.split("/")[1]
    return ({"text": f"{name} document {i}."} for i in itertools.count())

  monkeypatch.setattr(sources, "load_hf_dataset", endless)
  cfg = data_cfg("", 30_000)
  splits = registry.prepare_tokens(cfg, tmp_path / "cache")
  per = {p["dataset"]: p for p in splits.manifest["per_dataset"]}
  assert list(per) == list(math_text.DEFAULT_DATASETS)
  for p in per.values():
    assert p["budget"] == 15_000 and p["val"] == 1_500 and p["train"] == 13_500
  text = get_tokenizer("char").decode(np.asarray(splits.train))
  assert text.count("Maths-College document") > 400
  assert text.count("open-web-math document") > 400

  cfg.mix = "3,1"
  shares = registry.prepare_tokens(cfg, tmp_path / "cache").manifest["per_dataset"]
  assert [p["budget"] for p in shares] == [22_500, 7_500]


@pytest.mark.parametrize("mix", ["1", "1,0", "a,b", "1,2,3"])
def test_a_mix_that_does_not_fit_the_datasets_is_refused(tmp_path, mix):
  college, web = write_math_files(tmp_path)
  with pytest.raises(ValueError, match=rf"data.mix='{re.escape(mix)}'.*--config.data.mix=1,1"):
    registry.prepare_tokens(data_cfg(f"{college},{web}", 2000, mix=mix), tmp_path / "cache")


def test_cached_directory_is_reused_without_streaming(tmp_path, monkeypatch):
  college, web = write_math_files(tmp_path)
  cfg = data_cfg(f"{college},{web}", 3000)
  first = registry.prepare_tokens(cfg, tmp_path / "cache")
  monkeypatch.setattr(math_text, "iter_documents", lambda *a: pytest.fail("re-streamed"))
  again = registry.prepare_tokens(cfg, tmp_path / "cache")
  assert again.dir == first.dir and len(again.train) == len(first.train) > 1000


def test_clear_errors(tmp_path):
  college, _ = write_math_files(tmp_path)
  with pytest.raises(ValueError, match="data.max_tokens"):
    registry.prepare_tokens(data_cfg(str(college), 0), tmp_path / "cache")
  bad = tmp_path / "numbers.jsonl"
  bad.write_text("".join(json.dumps({"value": i}) + "\n" for i in range(5)))
  with pytest.raises(ValueError, match="data.text_field"):
    registry.prepare_tokens(data_cfg(str(bad), 100), tmp_path / "cache")
  assert math_text.dataset_ids("") == math_text.DEFAULT_DATASETS


def test_generated_exercises_are_reproducible_and_correct():
  first = list(itertools.islice(generated_math.documents(seed=0), 600))
  assert first == list(itertools.islice(generated_math.documents(seed=0), 600))
  assert first != list(itertools.islice(generated_math.documents(seed=1), 600))
  assert all(doc.startswith(f"Exercise {i + 1}. ") for i, doc in enumerate(first))
  checked = 0
  for doc in first:  # Every stated sum, difference, gcd and solution is right.
    if m := re.match(
      r"Exercise \d+\. Compute (-?\d+) ([+-]) (-?\d+)\.\n\nSolution\. .* = "
      r"(-?\d+)\.$",
      doc,
    ):
      a, op, b, result = m.groups()
      assert int(result) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    elif m := re.search(r"so gcd\((\d+), (\d+)\) = (\d+)\.$", doc):
      assert math.gcd(int(m[1]), int(m[2])) == int(m[3])
    elif m := re.match(
      r"Exercise \d+\. Solve (\d+)x \+ (\d+) = (-?\d+) for x\..* x = "
      r"(-?\d+)\. Check",
      doc,
      re.S,
    ):
      a, b, c, x = map(int, m.groups())
      assert a * x + b == c
    else:
      continue
    checked += 1
  assert checked > 250


def test_generated_dataset_needs_no_network(tmp_path, monkeypatch):
  monkeypatch.setattr(
    sources, "load_hf_dataset", lambda *a, **k: pytest.fail("the generated set reads no dataset")
  )
  docs = list(itertools.islice(math_text.iter_documents([generated_math.NAME]), 3))
  assert docs == list(itertools.islice(generated_math.documents(seed=0), 3))
  splits = registry.prepare_tokens(data_cfg(generated_math.NAME, 2000), tmp_path / "cache")
  tok = get_tokenizer("char")
  assert len(splits.val) == 200 and len(splits.train) == 1800
  assert tok.decode(np.asarray(splits.val)).startswith(docs[0])


def test_val_fraction_zero_trains_on_everything(tmp_path):
  college, web = write_math_files(tmp_path)
  splits = registry.prepare_tokens(
    data_cfg(f"{college},{web}", 10_000, val_fraction=0.0), tmp_path / "cache"
  )
  assert splits.val_is_train and splits.val is splits.train
  assert splits.manifest["n_val"] == 0
  assert get_tokenizer("char").decode(np.asarray(splits.train)).startswith("Differentiate x^0.")
