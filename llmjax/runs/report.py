"""Compare training runs: one markdown table and PNG plots from their workdirs.

  python -m llmjax.report runs/a runs/b [--out=report] [--x=step|tokens|time]

Reads each RUN_DIR's metrics.jsonl, config.json and summary.json (written by the
trainer) and writes into --out:

* `report.md`: one row per run (config name, parameters, tokens seen, steps, best and
  final validation loss, perplexity and bits per byte at the best validation loss, test
  perplexity when the data has a test split, median tokens/s, wall time) and the plots;
* `report.json`: the same rows as numbers, for scripts;
* `loss.png`: train (thin) and validation (dots) loss of all runs on one chart;
* `lr.png` and `tokens_per_s.png`.

`--x` picks the x axis of every plot: optimizer step, tokens seen, or wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import statistics
import sys
from typing import Any, Sequence

from llmjax.util import markdown as md

X_AXES = {"step": ("step", "optimizer step"), "tokens": ("tokens", "tokens seen"),
          "time": ("elapsed_s", "wall time")}
COLUMNS = [  # (key in a row, table heading)
    ("run", "run"), ("config", "config"), ("params", "params"), ("tokens", "tokens"),
    ("steps", "steps"), ("best_val_loss", "best val loss"),
    ("final_val_loss", "final val loss"), ("val_perplexity", "val ppl"),
    ("bits_per_byte", "bits/byte"), ("test_perplexity", "test ppl"),
    ("tokens_per_s", "tokens/s"), ("wall_time_s", "wall time"), ("status", "status")]


class ReportError(ValueError):
  pass


@dataclasses.dataclass
class Run:
  """One training workdir, read back.

  Attributes:
    dir: the workdir.
    label: its name in tables and legends (the directory name, made unique).
    config: config.json ({} if absent).
    summary: summary.json ({} if absent, e.g. a run from an older trainer).
    records: metrics.jsonl, one dict per line.
  """
  dir: pathlib.Path
  label: str
  config: dict
  summary: dict
  records: list[dict]

  def series(self, key: str, x: str = "step") -> tuple[list[float], list[float]]:
    """(xs, ys) of the records that have both the x field and `key`."""
    x_key = X_AXES[x][0]
    pairs = [(r[x_key], r[key]) for r in self.records
             if isinstance(r.get(key), (int, float)) and isinstance(r.get(x_key), (int, float))
             and math.isfinite(r[key])]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _read_json(path: pathlib.Path) -> dict:
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    return {}
  except ValueError as e:
    raise ReportError(f"{path} is not valid JSON ({e}); delete or repair it.") from e


def load_run(run_dir: str | os.PathLike[str], label: str | None = None) -> Run:
  """Reads a training workdir; fails clearly when it is not one."""
  run_dir = pathlib.Path(run_dir)
  metrics = run_dir / "metrics.jsonl"
  if not metrics.is_file():
    raise ReportError(f"{run_dir} is not a training run directory (no metrics.jsonl); give "
                      f"the --workdir of a finished or running python -m llmjax.main job.")
  records = []
  for i, line in enumerate(metrics.read_text().splitlines()):
    if line.strip():
      try:
        records.append(json.loads(line))
      except ValueError:  # A line cut short by a crash: keep what is readable.
        print(f"warning: {metrics}:{i + 1} is not valid JSON; skipped", file=sys.stderr)
  return Run(dir=run_dir, label=label or run_dir.absolute().name,
             config=_read_json(run_dir / "config.json"),
             summary=_read_json(run_dir / "summary.json"), records=records)


def load_runs(run_dirs: Sequence[str | os.PathLike[str]]) -> list[Run]:
  """Loads several workdirs; labels are directory names, with parents added where equal."""
  paths = [pathlib.Path(d).absolute() for d in run_dirs]
  labels = [p.name for p in paths]
  for depth in range(2, 6):
    if len(set(labels)) == len(labels):
      break
    labels = ["/".join(p.parts[-depth:]) for p in paths]
  return [load_run(p, label) for p, label in zip(paths, labels)]


def run_row(run: Run) -> dict[str, Any]:
  """The report numbers of one run (None where the run does not have them)."""
  s = run.summary
  _, val = run.series("val_loss")
  _, train = run.series("train_loss")
  best_val = min(val) if val else s.get("best_val_loss")
  final_val = val[-1] if val else s.get("final_val_loss")
  bytes_per_token = s.get("bytes_per_token")
  _, speeds = run.series("tokens_per_s")
  speeds = [v for v in speeds if v > 0]
  last = run.records[-1] if run.records else {}
  return {
      "run": run.label,
      "config": run.config.get("name") or s.get("name"),
      "params": s.get("num_params"),
      "tokens": max((r.get("tokens", 0) for r in run.records), default=None),
      "steps": max((r.get("step", 0) for r in run.records), default=None),
      "final_train_loss": train[-1] if train else None,
      "best_val_loss": best_val,
      "final_val_loss": final_val,
      "val_perplexity": math.exp(min(best_val, 50.0)) if best_val is not None else None,
      "bits_per_byte": (best_val / math.log(2) / bytes_per_token
                        if best_val is not None and bytes_per_token else None),
      "test_loss": s.get("test_loss"),
      "test_perplexity": s.get("test_perplexity"),
      "tokens_per_s": statistics.median(speeds) if speeds else None,
      "wall_time_s": s.get("elapsed_s", last.get("elapsed_s")),
      "unigram_entropy": s.get("unigram_entropy"),
      "status": s.get("status", "unknown"),
      "dir": str(run.dir),
  }


def _si(value: float) -> str:
  for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(value) >= factor:
      return f"{value / factor:.3g}{suffix}"
  return f"{value:.3g}"


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_value(key: str, value: Any) -> str:
  """How a row value reads in the table."""
  if value is None:
    return "–"
  if key in ("params", "tokens", "tokens_per_s"):
    return _si(value)
  if key == "wall_time_s":
    return _duration(value)
  if key in ("best_val_loss", "final_val_loss", "bits_per_byte"):
    return f"{value:.4f}"
  if key in ("val_perplexity", "test_perplexity"):
    return f"{value:.2f}"
  return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
  """A markdown table of `rows`; columns that no row has (e.g. test ppl) are left out."""
  columns = [(k, h) for k, h in COLUMNS if any(r.get(k) is not None for r in rows)]
  return md.table([h for _, h in columns],
                  ([format_value(k, row.get(k)) for k, _ in columns] for row in rows),
                  right=[k not in ("run", "config", "status") for k, _ in columns])


# Plots.


def _pyplot():
  import matplotlib  # Imported here: matplotlib (plots only; slow to import).
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # Imported here: matplotlib (plots only; slow to import).
  return plt


def _x_values(xs: list[float], x: str, scale: float) -> list[float]:
  return [v / scale for v in xs] if x == "time" else xs


def _time_scale(runs: list[Run]) -> tuple[float, str]:
  longest = max((r.series("train_loss", "time")[0][-1:] or [0])[0] for r in runs)
  if longest > 2 * 3600:
    return 3600.0, "wall time (hours)"
  if longest > 120:
    return 60.0, "wall time (minutes)"
  return 1.0, "wall time (seconds)"


def _setup_x(ax, runs: list[Run], x: str) -> float:
  from matplotlib import ticker  # Imported here: matplotlib (plots only; slow to import).
  scale, label = (_time_scale(runs) if x == "time" else (1.0, X_AXES[x][1]))
  ax.set_xlabel(label)
  if x == "tokens":
    ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))
  elif x == "step":
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  ax.grid(True, alpha=0.3)
  return scale


def _loss_limits(runs: list[Run], x: str) -> tuple[float, float] | None:
  """Y limits that show where the runs differ: the first 5% of each train curve (the
  steep drop from ln(vocab)) does not set the top."""
  values = []
  for run in runs:
    values += run.series("val_loss", x)[1]
    train = run.series("train_loss", x)[1]
    values += train[len(train) // 20:]
  if not values:
    return None
  lo, hi = min(values), max(values)
  pad = 0.05 * (hi - lo) or 0.05
  return lo - pad, hi + pad


def loss_figure(runs: list[Run], x: str = "step"):
  """A matplotlib figure: train and validation loss of all runs on one chart."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
  scale = _setup_x(ax, runs, x)
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for i, run in enumerate(runs):
    color = colors[i % len(colors)]
    xs, ys = run.series("train_loss", x)
    if xs:
      ax.plot(_x_values(xs, x, scale), ys, color=color, lw=1.0, alpha=0.55,
              label=f"{run.label} train")
    xs, ys = run.series("val_loss", x)
    if xs:
      ax.plot(_x_values(xs, x, scale), ys, color=color, lw=2.0, marker="o", ms=4,
              label=f"{run.label} val")
  limits = _loss_limits(runs, x)
  if limits:
    ax.set_ylim(*limits)
    entropies = sorted({round(r.summary["unigram_entropy"], 3) for r in runs
                        if r.summary.get("unigram_entropy") is not None})
    for j, h in enumerate(entropies):
      if limits[0] <= h <= limits[1]:
        ax.axhline(h, color="gray", ls=":", lw=1.0,
                   label="unigram entropy (val)" if j == 0 else None)
  ax.set_ylabel("loss (nats per token)")
  ax.set_title("Train and validation loss")
  ax.legend(fontsize=8, ncol=2 if len(runs) > 3 else 1)
  return fig


def plot_loss(runs: list[Run], path: str | os.PathLike[str], x: str = "step") -> pathlib.Path:
  """Saves `loss_figure` as a PNG."""
  return _save(loss_figure(runs, x), path)


def metric_figure(runs: list[Run], key: str, ylabel: str, x: str = "step"):
  """A matplotlib figure: one line per run of metric `key` against the x axis."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(9, 4), dpi=120)
  scale = _setup_x(ax, runs, x)
  for run in runs:
    xs, ys = run.series(key, x)
    if xs:
      ax.plot(_x_values(xs, x, scale), ys, lw=1.5, label=run.label)
  ax.set_ylabel(ylabel)
  ax.set_title(ylabel)
  ax.legend(fontsize=8)
  return fig


def plot_metric(runs: list[Run], key: str, ylabel: str, path: str | os.PathLike[str],
                x: str = "step") -> pathlib.Path:
  """Saves `metric_figure` as a PNG."""
  return _save(metric_figure(runs, key, ylabel, x), path)


def _save(fig, path) -> pathlib.Path:
  path = pathlib.Path(path)
  fig.tight_layout()
  fig.savefig(path)
  _pyplot().close(fig)
  return path


def write_report(run_dirs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
                 x: str = "step", title: str = "Run comparison") -> pathlib.Path:
  """Writes report.md, report.json and the PNGs for `run_dirs` into `out`.

  Args:
    run_dirs: training workdirs.
    out: output directory (created).
    x: x axis of the plots: step, tokens or time.
    title: heading of report.md.

  Returns:
    The output directory.
  """
  if x not in X_AXES:
    raise ReportError(f"x axis {x!r} is unknown; use one of {', '.join(X_AXES)}.")
  if not run_dirs:
    raise ReportError("Give at least one run directory.")
  runs = load_runs(run_dirs)
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  rows = [run_row(r) for r in runs]
  plots = [("Loss", plot_loss(runs, out / "loss.png", x)),
           ("Learning rate", plot_metric(runs, "lr", "learning rate", out / "lr.png", x)),
           ("Throughput", plot_metric(runs, "tokens_per_s", "tokens/s",
                                      out / "tokens_per_s.png", x))]
  md = [f"# {title}", "", markdown_table(rows), "",
        "Perplexity and bits per byte are at the best validation loss; bits per byte use "
        "the validation split's UTF-8 bytes per token. Tokens/s is the median over logged "
        "steps. Test perplexity uses the parameters of the best validation loss.", ""]
  for name, path in plots:
    md += [f"## {name}", "", f"![{name}]({path.name})", ""]
  md += ["## Runs", ""] + [f"- `{r['run']}`: {r['dir']}" for r in rows] + [""]
  (out / "report.md").write_text("\n".join(md))
  (out / "report.json").write_text(json.dumps({"x": x, "runs": rows}, indent=2) + "\n")
  return out
