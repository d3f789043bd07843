"""The architecture comparison runs end to end (smoke variant) on local math files."""

import json
import re

import pytest

from llmjax import jobs
from llmjax.config import load as config_load
from llmjax.experiments import arch_compare
from llmjax.util import errors


def write_math_files(tmp_path):
  """Local stand-ins for Maths-College (question/answer) and open-web-math (text)."""
  college, web = tmp_path / "college.jsonl", tmp_path / "web.jsonl"
  college.write_text(
    "".join(
      json.dumps({"instruction": f"Integrate {i} x dx.", "output": f"It is {i} x^2 / 2 + C."})
      + "\n"
      for i in range(60)
    )
  )
  web.write_text(
    "".join(json.dumps({"text": f"Proof. Let n = {i}; then n^2 >= 0."}) + "\n" for i in range(60))
  )
  return college, web


def test_table_formats_every_column():
  row = {
    "model": "gpt",
    "objective": "next token",
    "heads": 2,
    "n_embd": "16",
    "micro_batch": 4,
    "block_size": 64,
    "num_params": 12345,
    "train_batches": 6,
    "ms_per_batch": 12.34,
    "final_train_loss": 3.21,
    "test_batches": 2,
    "ms_per_token": 0.5,
    "test_loss": None,
  }
  table = arch_compare.results_table([row]).splitlines()
  assert table[0].startswith("| model | objective | heads | embedding size | micro batch |")
  assert table[2] == (
    "| gpt | next token | 2 | 16 | 4 | 64 | 12,345 | 6 | 12.3 | 3.2100 | 2 | 0.50 | n/a |"
  )


def test_original_rows_have_the_original_settings_and_parameter_counts():
  c = config_load.load_config("configs/arch_compare.py:original")
  rows = arch_compare.parse_rows(c)
  assert [r.name for r in rows] == ["gpt", "conv_attention-t64", "conv_attention", "progressive"]
  got = []
  for row in rows:
    rc = arch_compare.run_config(c, row)
    got.append(
      (
        rc.model.arch,
        rc.model.n_head,
        arch_compare.embedding_size(rc),
        rc.model.block_size,
        arch_compare.objective(rc),
        rc.train.batch_size,
        arch_compare.count_parameters(rc),
      )
    )
  assert got == [
    ("gpt", 6, "192", 256, "next token", 8, 15_046_272),
    ("conv_attention", 6, "48 - 384", 1024, "token +64", 8, 9_074_304),
    ("conv_attention", 6, "48 - 384", 1024, "next token", 8, 9_074_304),
    ("progressive", 6, "192", 256, "next token", 8, 15_156_864),  # Stage 3, adapters in.
  ]
  assert arch_compare.model_names(config_load.load_config("configs/arch_compare.py:cpu")) == [
    r.name for r in rows
  ]


def test_matched_rows_are_within_ten_percent_in_parameters_at_one_context():
  c = config_load.load_config("configs/arch_compare.py:matched")
  configs = [arch_compare.run_config(c, r) for r in arch_compare.parse_rows(c)]
  counts = [arch_compare.count_parameters(rc) for rc in configs]
  assert [rc.model.arch for rc in configs] == ["gpt", "conv_attention", "progressive"]
  assert {rc.model.block_size for rc in configs} == {256}
  assert {arch_compare.objective(rc) for rc in configs} == {"next token"}
  assert max(counts) <= 1.1 * min(counts), counts


@pytest.mark.parametrize(
  "models,match",
  [
    ("gpt,rnn", "entry 'rnn'"),
    ("conv_attention(width=3)", "override 'width=3'"),
    ("gpt(n_embd=x)", "override 'n_embd=x'"),
    ("gpt,gpt", "each row once"),
    ("gpt(target_offset=4)", "conv_attention only"),
  ],
)
def test_bad_rows_are_config_errors_naming_the_entry(models, match):
  c = config_load.load_config("configs/arch_compare.py:smoke")
  c.unlock()
  c.compare.models = models
  with pytest.raises(errors.ConfigError, match=re.escape(match)):
    for row in arch_compare.parse_rows(c):
      arch_compare.run_config(c, row)


@pytest.mark.slow
def test_smoke_variant_trains_every_row_and_writes_table_and_plot(tmp_path, monkeypatch):
  monkeypatch.setenv("LLMJAX_CACHE", str(tmp_path / "cache"))
  college, web = write_math_files(tmp_path)
  c = config_load.load_config("configs/arch_compare.py:smoke")
  c.unlock()
  c.data.path, c.data.tokenizer, c.model.vocab_size = f"{college},{web}", "char", 257
  c.lock()
  rows = arch_compare.run(c, tmp_path / "arch", jobs.run)
  assert [r["model"] for r in rows] == ["gpt", "conv_attention-t8"]
  assert [r["block_size"] for r in rows] == [32, 64]
  assert [r["n_embd"] for r in rows] == ["16", "8 - 64"]
  assert [r["objective"] for r in rows] == ["next token", "token +8"]
  assert [r["num_params"] for r in rows] == [  # The model as trained last.
    arch_compare.count_parameters(arch_compare.run_config(c, row))
    for row in arch_compare.parse_rows(c)
  ]
  for row in rows:
    assert row["train_batches"] == 6 and row["micro_batch"] == 8
    assert row["test_loss"] > 0 and row["final_train_loss"] > 0
    assert row["ms_per_batch"] > 0 and row["ms_per_token"] > 0
  table = (tmp_path / "arch/results.md").read_text().splitlines()
  assert len(table) == 4 and "average test loss" in table[0]
  assert json.loads((tmp_path / "arch/results.json").read_text()) == rows
  png = (tmp_path / "arch/loss_curves.png").read_bytes()
  assert png.startswith(b"\x89PNG") and len(png) > 10_000
