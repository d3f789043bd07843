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


def test_streams_both_datasets_in_turn_val_first(tmp_path):
  college, web = write_math_files(tmp_path)
  tok = get_tokenizer("char")
  docs = list(math_text.iter_documents([str(college), str(web)]))
  assert len(docs) == 60
  assert docs[0] == "Differentiate x^0.\n\nThe derivative is 0 x^-1."
  assert docs[30] == "Lemma 0. For all n, n + 0 > n."

  splits = registry.prepare_tokens(data_cfg(f"{college},{web}", 10_000), tmp_path / "cache")
  assert splits.dir.name.startswith("math-")
  text_val = tok.decode(np.asarray(splits.val))
  text_train = tok.decode(np.asarray(splits.train))
  assert text_val.startswith(docs[0])
  assert len(splits.val) == 1000  # val_fraction * max_tokens, the last document cut.
  assert text_train.rstrip().endswith(docs[-1])  # Everything else fits under the cap.
  assert splits.manifest["datasets"] == [str(college), str(web)]
  assert splits.manifest["n_train"] == len(splits.train)
  # Val documents never reappear in training.
  first_train_doc = text_train.split(tok.decode([tok.eot_id]))[0]
  assert first_train_doc in docs and first_train_doc not in text_val


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
