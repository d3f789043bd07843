"""Tests for llmjax.report on run directories with known metrics."""

import json
import math

import pytest

from llmjax.cli import report as report_cli
from llmjax.runs import report


def make_run(
  path,
  name,
  losses,
  val_every=2,
  tokens_per_step=100,
  speeds=None,
  summary=True,
  bytes_per_token=4.0,
  test_perplexity=None,
):
  """A workdir as the trainer writes it: train records every step, val every `val_every`."""
  path.mkdir(parents=True)
  (path / "config.json").write_text(json.dumps({"name": name, "train": {"steps": len(losses)}}))
  lines = []
  for i, loss in enumerate(losses, start=1):
    lines.append(
      {
        "step": i,
        "train_loss": loss,
        "lr": 1e-3 * i,
        "grad_norm": 1.0,
        "tokens_per_s": (speeds or [1000.0] * len(losses))[i - 1],
        "tokens": i * tokens_per_step,
        "elapsed_s": 10.0 * i,
      }
    )
    if i % val_every == 0:
      lines.append(
        {
          "step": i,
          "val_loss": loss + 0.5,
          "val_perplexity": math.exp(loss + 0.5),
          "tokens": i * tokens_per_step,
          "elapsed_s": 10.0 * i + 1,
        }
      )
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
  if summary:
    s = {
      "name": name,
      "num_params": 1_234_567,
      "bytes_per_token": bytes_per_token,
      "unigram_entropy": 5.5,
      "elapsed_s": 10.0 * len(losses) + 5,
      "status": "finished",
    }
    if test_perplexity:
      s["test_perplexity"] = test_perplexity
    (path / "summary.json").write_text(json.dumps(s))
  return path


@pytest.fixture
def two_runs(tmp_path):
  a = make_run(
    tmp_path / "runs" / "a", "small", [6.0, 5.0, 4.0, 3.5], speeds=[10.0, 2000.0, 3000.0, 4000.0]
  )
  b = make_run(
    tmp_path / "runs" / "b",
    "big",
    [6.0, 4.5, 3.0, 2.0, 1.5, 1.25],
    val_every=3,
    tokens_per_step=200,
    summary=False,
  )
  return a, b


def test_run_row_numbers(two_runs):
  a, b = report.load_runs(two_runs)
  row = report.run_row(a)
  assert (row["run"], row["config"], row["params"], row["tokens"], row["steps"]) == (
    "a",
    "small",
    1_234_567,
    400,
    4,
  )
  assert row["best_val_loss"] == 4.0 and row["final_val_loss"] == 4.0  # 3.5 + 0.5 at step 4.
  assert row["val_perplexity"] == pytest.approx(math.exp(4.0))
  assert row["bits_per_byte"] == pytest.approx(4.0 / math.log(2) / 4.0)
  assert row["tokens_per_s"] == 2500.0  # Median of the logged values.
  assert row["wall_time_s"] == 45.0 and row["status"] == "finished"
  row = report.run_row(b)  # No summary.json: what metrics.jsonl alone gives.
  assert (row["params"], row["bits_per_byte"], row["status"]) == (None, None, "unknown")
  assert row["best_val_loss"] == 1.75 and row["wall_time_s"] == 61.0
  assert (row["tokens"], row["steps"], row["config"]) == (1200, 6, "big")


def test_markdown_table_rows_and_columns(two_runs):
  rows = [report.run_row(r) for r in report.load_runs(two_runs)]
  table = report.markdown_table(rows).splitlines()
  assert table[0] == (
    "| run | config | params | tokens | steps | best val loss | final val "
    "loss | val ppl | bits/byte | tokens/s | wall time | status |"
  )
  assert table[2] == (
    "| a | small | 1.23M | 400 | 4 | 4.0000 | 4.0000 | 54.60 | 1.4427 | 2.5k | 0:45 | finished |"
  )
  assert table[3].startswith("| b | big | – | 1.2k | 6 | 1.7500 | 1.7500 |")
  assert len(table) == 4  # No test ppl column: no run has a test split.
  rows[0]["test_perplexity"] = 12.345
  assert "| test ppl |" in report.markdown_table(rows)


@pytest.mark.parametrize(
  "x, a_val_x", [("step", [2, 4]), ("tokens", [200, 400]), ("time", [21.0, 41.0])]
)
def test_loss_figure_has_both_runs_on_one_chart(two_runs, x, a_val_x):
  fig = report.loss_figure(report.load_runs(two_runs), x)
  (ax,) = fig.axes
  lines = {line.get_label(): line for line in ax.get_lines()}
  assert [k for k in lines if not k.startswith("unigram")] == [
    "a train",
    "a val",
    "b train",
    "b val",
  ]
  assert list(lines["a val"].get_xdata()) == a_val_x
  assert list(lines["b val"].get_ydata()) == [3.5, 1.75]
  # The y range shows the runs' differences rather than the first steps' drop.
  assert ax.get_ylim()[0] < 1.75 and ax.get_ylim()[1] < 7.0
  report._pyplot().close(fig)


def test_write_report_files(two_runs, tmp_path):
  out = report.write_report(two_runs, tmp_path / "out", x="tokens")
  assert sorted(p.name for p in out.iterdir()) == [
    "loss.png",
    "lr.png",
    "report.json",
    "report.md",
    "tokens_per_s.png",
  ]
  for png in out.glob("*.png"):
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
  md = (out / "report.md").read_text()
  assert "| a | small |" in md and "| b | big |" in md and "![Loss](loss.png)" in md
  rows = json.loads((out / "report.json").read_text())
  assert rows["x"] == "tokens" and [r["run"] for r in rows["runs"]] == ["a", "b"]


def test_cli(two_runs, tmp_path, capsys):
  assert report_cli.main([str(d) for d in two_runs] + [f"--out={tmp_path / 'cli'}"]) == 0
  out = capsys.readouterr().out
  assert "| a | small |" in out and "report.md" in out
  assert (tmp_path / "cli" / "loss.png").is_file()
  assert report_cli.main([str(tmp_path / "nothing"), f"--out={tmp_path / 'x'}"]) == 2
  assert "no metrics.jsonl" in capsys.readouterr().err


def test_labels_unique_and_errors(tmp_path):
  one = make_run(tmp_path / "sweep1" / "run", "x", [3.0, 2.0])
  two = make_run(tmp_path / "sweep2" / "run", "x", [3.0, 2.5])
  assert [r.label for r in report.load_runs([one, two])] == ["sweep1/run", "sweep2/run"]
  with pytest.raises(report.ReportError, match="x axis 'epoch' is unknown"):
    report.write_report([one], tmp_path / "o", x="epoch")
  (one / "metrics.jsonl").write_text('{"step": 1, "train_loss": 3.0}\n{"step": 2, "tra')
  assert len(report.load_run(one).records) == 1  # A line cut short by a crash is skipped.
