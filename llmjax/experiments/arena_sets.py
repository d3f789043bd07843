"""The arena study's three experiment sets, as their author ran them, and their report.

The original study fine-tuned encoders to judge chat-arena battles (A wins / B wins /
tie): the prompt prepended to each response, A and B encoded separately, the first
token's last-layer output of each concatenated into a small head; 128 tokens per side,
an 80/10/10 split, batch 32, 3 epochs of AdamW at lr 1e-5, test accuracy:

  set1  distilbert-base-uncased: random 35.1%, baseline (full) 47.3%, fully frozen 45.3%,
        bottom frozen 46.9%                              (how many parameters train)
  set2  distilbert 47.3%, bert-base-uncased 48.35%, bert-large-uncased 48.43%   (size)
  set3  roberta-base 48.6%, google/electra-base-discriminator 49.3%,
        microsoft/deberta-base 35.1%, albert-base-v2 49.1%            (pre-training)

A set is a list of runs `label[@checkpoint]:mode` (`arena.runs`, e.g.
"distilbert:random,distilbert:full"); `run_configs` turns a set config into one config
per run, `run_set` trains them with a given function and `write_report` writes the
table (markdown and JSON) and a confusion-matrix PNG from plain result dicts:

  model, mode              the run (encoder label, freezing mode)
  params, trainable_params parameter counts
  accuracy, accuracy_ci95  test accuracy and its 95% bootstrap interval [low, high]
  log_loss                 test log loss
  seconds_per_epoch        training time per epoch
  confusion                3x3 test counts, rows true, columns predicted (optional)
  examples                 test pairs (optional)
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np

from llmjax.models.pair_classifier import CLASSES, FREEZE_MODES
from llmjax.util import errors

# name -> (checkpoint: hub id or "minilm" for the offline all-MiniLM-L6-v2, response tokens
# that fit the encoder's positions after a 128-token prompt).
ENCODERS = {
  "minilm": ("minilm", 380),
  "distilbert": ("distilbert-base-uncased", 380),
  "bert": ("bert-base-uncased", 380),
  "bert-large": ("bert-large-uncased", 380),
  "roberta": ("roberta-base", 380),
  "electra": ("google/electra-base-discriminator", 380),
  "albert": ("albert-base-v2", 380),
  "deberta": ("microsoft/deberta-base", 512),
  "deberta-v3": ("microsoft/deberta-v3-base", 512),
}
SETS = {
  "set1": (
    ("distilbert", "random"),
    ("distilbert", "full"),
    ("distilbert", "frozen"),
    ("distilbert", "bottom_frozen"),
  ),
  "set2": (("distilbert", "full"), ("bert", "full"), ("bert-large", "full")),
  "set3": (("roberta", "full"), ("electra", "full"), ("deberta", "full"), ("albert", "full")),
}
# Test accuracy (%) the original study printed for each run.
ORIGINAL_ACCURACY = {
  ("distilbert", "random"): 35.1,
  ("distilbert", "full"): 47.3,
  ("distilbert", "frozen"): 45.3,
  ("distilbert", "bottom_frozen"): 46.9,
  ("bert", "full"): 48.35,
  ("bert-large", "full"): 48.43,
  ("roberta", "full"): 48.6,
  ("electra", "full"): 49.3,
  ("deberta", "full"): 35.1,
  ("albert", "full"): 49.1,
}
# Offline stand-ins for the smoke variants: tiny random checkpoints of each family
# (tests/goldens), read with the synthetic rows' tokenizer.
GOLDENS = pathlib.Path(__file__).resolve().parents[2] / "tests" / "goldens"
SMOKE_CHECKPOINTS = {
  "distilbert": "distilbert",
  "bert": "bert",
  "bert-large": "bert",
  "roberta": "roberta",
  "electra": "electra",
  "albert": "albert",
  "deberta": "deberta",
  "deberta-v3": "deberta_v3",
}
REQUIRED_FIELDS = (
  "model",
  "mode",
  "params",
  "trainable_params",
  "accuracy",
  "accuracy_ci95",
  "log_loss",
  "seconds_per_epoch",
)


@dataclasses.dataclass(frozen=True)
class RunSpec:
  label: str  # Encoder name shown in the table (a key of ENCODERS or any text).
  checkpoint: str  # classifier.init_from of the run.
  mode: str  # classifier.freeze of the run.

  @property
  def name(self) -> str:
    """Run name and workdir subdirectory."""
    return f"{self.label}-{self.mode}"


def runs_spec(set_name: str, smoke: bool = False) -> str:
  """The `arena.runs` string of a set; `smoke` points every run at a tiny local checkpoint."""
  if set_name not in SETS:
    raise errors.ConfigError(f"unknown arena set {set_name!r}; use one of {sorted(SETS)}")
  parts = []
  for label, mode in SETS[set_name]:
    at = f"@{GOLDENS / SMOKE_CHECKPOINTS[label]}" if smoke else ""
    parts.append(f"{label}{at}:{mode}")
  return ",".join(parts)


def parse_runs(spec: str) -> list[RunSpec]:
  """RunSpecs of `label[@checkpoint]:mode,...`; a label without @ must be in ENCODERS."""
  runs = []
  for item in (p.strip() for p in spec.split(",")):
    if not item:
      continue
    target, sep, mode = item.rpartition(":")
    if not sep or mode not in FREEZE_MODES:
      raise errors.ConfigError(
        f"arena.runs entry {item!r} must read label[@checkpoint]:mode "
        f"with mode one of {FREEZE_MODES}, e.g. 'distilbert:random'"
      )
    label, at, checkpoint = target.partition("@")
    if not at:
      if label not in ENCODERS:
        raise errors.ConfigError(
          f"arena.runs entry {item!r}: unknown encoder {label!r}; use "
          f"one of {sorted(ENCODERS)} or label@checkpoint:mode"
        )
      checkpoint = ENCODERS[label][0]
    runs.append(RunSpec(label, checkpoint, mode))
  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    raise errors.ConfigError(f"arena.runs {spec!r} names a run twice: {names}")
  return runs


def run_configs(
  config: ml_collections.ConfigDict,
) -> list[tuple[RunSpec, ml_collections.ConfigDict]]:
  """One config per run of `config.arena.runs`: classifier.init_from / freeze and the run
  name set, arena.runs emptied; every other setting (the set's) is shared."""
  runs = parse_runs(config.arena.runs)
  if not runs:
    raise errors.ConfigError("arena.runs is empty: a set config lists its runs there")
  out = []
  for run in runs:
    c = ml_collections.ConfigDict(config.to_dict())
    c.name = f"{config.name}-{run.name}"
    c.classifier.init_from = run.checkpoint
    c.classifier.freeze = run.mode
    c.arena.runs = ""
    out.append((run, c))
  return out


def run_set(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  train_one: Callable[[ml_collections.ConfigDict, pathlib.Path], dict[str, Any]],
  title: str = "",
) -> dict[str, pathlib.Path]:
  """Trains every run of the set in `workdir/<run name>` with `train_one(config, workdir)`
  (which returns a result dict without model / mode) and writes the report in `workdir`."""
  workdir = pathlib.Path(workdir)
  results = []
  for run, c in run_configs(config):
    started = time.perf_counter()
    result = dict(train_one(c, workdir / run.name))
    result.setdefault("seconds_total", time.perf_counter() - started)
    results.append({"model": run.label, "mode": run.mode, **result})
  return write_report(results, workdir, title=title or config.name)


def _count(n: int) -> str:
  if n >= 1e6:
    return f"{n / 1e6:.2f}M"
  return f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


def _check(results: list[dict[str, Any]]) -> None:
  if not results:
    raise ValueError("no results to report")
  for i, r in enumerate(results):
    missing = [f for f in REQUIRED_FIELDS if f not in r]
    if missing:
      raise ValueError(f"result {i} ({r.get('model')}, {r.get('mode')}) lacks {missing}")


def format_table(results: list[dict[str, Any]]) -> str:
  """The markdown table of a set's runs, with the original study's accuracy beside ours."""
  _check(results)
  lines = [
    "| model | mode | parameters | trainable | test accuracy [95% interval] | log loss "
    "| s / epoch | original |",
    "|---|---|---:|---:|---|---:|---:|---:|",
  ]
  for r in results:
    low, high = r["accuracy_ci95"]
    original = r.get("original_accuracy", ORIGINAL_ACCURACY.get((r["model"], r["mode"])))
    lines.append(
      f"| {r['model']} | {r['mode']} | {_count(r['params'])} | {_count(r['trainable_params'])} "
      f"| {100 * r['accuracy']:.1f}% [{100 * low:.1f}, {100 * high:.1f}] "
      f"| {r['log_loss']:.4f} | {r['seconds_per_epoch']:.1f} "
      f"| {'' if original is None else f'{original}%'} |"
    )
  return "\n".join(lines)


def plot_confusions(results: list[dict[str, Any]], path: str | pathlib.Path) -> pathlib.Path:
  """One row-normalised confusion matrix per run (counts written in the cells), as a PNG."""
  import matplotlib  # Imported here: matplotlib (plots only; slow to import).

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # Imported here: matplotlib (plots only; slow to import).

  shown = [r for r in results if r.get("confusion") is not None]
  if not shown:
    raise ValueError("no result carries a confusion matrix to plot")
  cols = min(len(shown), 4)
  rows = -(-len(shown) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.3 * rows), squeeze=False)
  for ax in axes.flat[len(shown) :]:
    ax.axis("off")
  for ax, r in zip(axes.flat, shown):
    counts = np.asarray(r["confusion"], np.int64)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
    for (i, j), n in np.ndenumerate(counts):
      ax.text(
        j,
        i,
        str(n),
        ha="center",
        va="center",
        color="white" if share[i, j] > 0.6 else "black",
        fontsize=9,
      )
    ax.set_xticks(range(len(CLASSES)), CLASSES, fontsize=8)
    ax.set_yticks(range(len(CLASSES)), CLASSES, fontsize=8)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    ax.set_title(f"{r['model']} ({r['mode']})\naccuracy {100 * r['accuracy']:.1f}%", fontsize=9)
  fig.tight_layout()
  path = pathlib.Path(path)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def write_report(
  results: list[dict[str, Any]],
  out_dir: str | pathlib.Path,
  *,
  title: str = "arena set",
  stem: str = "arena_set",
) -> dict[str, pathlib.Path]:
  """Writes `stem.md` (title + table), `stem.json` (the results) and, when the results carry
  confusion matrices, `stem_confusion.png` in `out_dir`; returns their paths by kind."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  table = format_table(results)
  paths = {"markdown": out_dir / f"{stem}.md", "json": out_dir / f"{stem}.json"}
  paths["markdown"].write_text(f"## {title}\n\n{table}\n")
  paths["json"].write_text(json.dumps(results, indent=2, default=float) + "\n")
  if any(r.get("confusion") is not None for r in results):
    paths["confusion"] = plot_confusions(results, out_dir / f"{stem}_confusion.png")
  return paths
