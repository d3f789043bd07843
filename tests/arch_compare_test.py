"""The architecture comparison runs end to end (smoke variant) on local math files."""

import json

import pytest

from llmjax import config_util
from llmjax.experiments import arch_compare


def write_math_files(tmp_path):
  """Local stand-ins for Maths-College (question/answer) and open-web-math (text)."""
  college, web = tmp_path / "college.jsonl", tmp_path / "web.jsonl"
  college.write_text("".join(json.dumps({"instruction": f"Integrate {i} x dx.",
                                         "output": f"It is {i} x^2 / 2 + C."}) + "\n"
                             for i in range(60)))
  web.write_text("".join(json.dumps({"text": f"Proof. Let n = {i}; then n^2 >= 0."}) + "\n"
                         for i in range(60)))
  return college, web


def test_table_formats_every_column():
  row = {"model": "gpt", "heads": 2, "n_embd": 16, "micro_batch": 4, "block_size": 64,
         "num_params": 12345, "train_batches": 6, "ms_per_batch": 12.34,
         "final_train_loss": 3.21, "test_batches": 2, "ms_per_token": 0.5, "test_loss": None}
  table = arch_compare.results_table([row]).splitlines()
  assert table[0].startswith("| model | heads | embedding size | micro batch |")
  assert table[2] == "| gpt | 2 | 16 | 4 | 64 | 12,345 | 6 | 12.3 | 3.2100 | 2 | 0.50 | n/a |"
  c = config_util.load_config("configs/arch_compare.py:smoke")
  assert arch_compare.model_names(c) == ["gpt", "conv_attention", "progressive"]
  c.unlock()
  c.compare.models = "gpt,rnn"
  with pytest.raises(ValueError, match="compare.models"):
    arch_compare.model_names(c)


@pytest.mark.slow
def test_smoke_variant_trains_three_models_and_writes_table_and_plot(tmp_path, monkeypatch):
  monkeypatch.setenv("LLMJAX_CACHE", str(tmp_path / "cache"))
  college, web = write_math_files(tmp_path)
  c = config_util.load_config("configs/arch_compare.py:smoke")
  c.unlock()
  c.data.path, c.data.tokenizer, c.model.vocab_size = f"{college},{web}", "char", 257
  c.lock()
  rows = arch_compare.run(c, tmp_path / "arch")
  assert [r["model"] for r in rows] == ["gpt", "conv_attention", "progressive"]
  for row in rows:
    assert row["train_batches"] == 6 and row["micro_batch"] == 8 and row["block_size"] == 64
    assert row["test_loss"] > 0 and row["final_train_loss"] > 0
    assert row["ms_per_batch"] > 0 and row["ms_per_token"] > 0
  assert rows[2]["stage_steps"] == [0, 2, 4]
  table = (tmp_path / "arch/results.md").read_text().splitlines()
  assert len(table) == 5 and "average test loss" in table[0]
  assert json.loads((tmp_path / "arch/results.json").read_text()) == rows
  png = (tmp_path / "arch/loss_curves.png").read_bytes()
  assert png.startswith(b"\x89PNG") and len(png) > 10_000
