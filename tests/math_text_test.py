"""Math source: local stand-ins for the two HF datasets streamed into token shards."""

import json

import numpy as np
import pytest

from llmjax.data import math_text
from llmjax.data import shards
from llmjax.data import sources
from llmjax.data.tokenizer import get_tokenizer


def write_math_files(tmp_path):
  """A question/answer set (like Maths-College) and a text set (like open-web-math)."""
  college = tmp_path / "college.jsonl"
  web = tmp_path / "web.jsonl"
  with college.open("w") as f:
    for i in range(30):
      f.write(json.dumps({"instruction": f"Differentiate x^{i}.",
                          "output": f"The derivative is {i} x^{i - 1}."}) + "\n")
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

  splits = shards.prepare_tokens(data_cfg(f"{college},{web}", 10_000), tmp_path / "cache")
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
  first = shards.prepare_tokens(cfg, tmp_path / "cache")
  monkeypatch.setattr(math_text, "iter_documents", lambda *a: pytest.fail("re-streamed"))
  again = shards.prepare_tokens(cfg, tmp_path / "cache")
  assert again.dir == first.dir and len(again.train) == len(first.train) > 1000


def test_clear_errors(tmp_path):
  college, _ = write_math_files(tmp_path)
  with pytest.raises(ValueError, match="data.max_tokens"):
    shards.prepare_tokens(data_cfg(str(college), 0), tmp_path / "cache")
  bad = tmp_path / "numbers.jsonl"
  bad.write_text("".join(json.dumps({"value": i}) + "\n" for i in range(5)))
  with pytest.raises(ValueError, match="data.text_field"):
    shards.prepare_tokens(data_cfg(str(bad), 100), tmp_path / "cache")
  assert math_text.dataset_ids("") == math_text.DEFAULT_DATASETS
