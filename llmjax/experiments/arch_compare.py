"""Trains the GPT-2 baseline, the convolution-attention model and the progressive model
with one config (same data, micro-batch and steps; each row may override its model's
width, heads, context or objective), then writes a results table and one loss-curve plot
(job `arch_compare`).

  python -m llmjax.main --config=configs/arch_compare.py:cpu --workdir=runs/arch

Outputs in the workdir: one run directory per model, `results.md` (markdown table),
`results.json` (the same rows) and `loss_curves.png` (train loss per step, test loss
points, progressive stage switches as dotted lines). Re-running resumes unfinished runs.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from llmjax import models
from llmjax.config import validate as config_validate
from llmjax.inference import generate
from llmjax.runs import load as run_load
from llmjax.train import metrics as metrics_lib
from llmjax.train.shape import lm_shape
from llmjax.util import errors
from llmjax.util import markdown as md

ARCHS = ("gpt", "conv_attention", "progressive")
# Model keys a row of compare.models may override, and their types.
ROW_KEYS = {
  "n_embd": int,
  "n_head": int,
  "n_layer": int,
  "block_size": int,
  "fan_in": int,
  "target_offset": int,
}
COLUMNS = (
  ("model", "model", "{}"),
  ("objective", "objective", "{}"),
  ("heads", "heads", "{}"),
  ("embedding size", "n_embd", "{}"),
  ("micro batch", "micro_batch", "{}"),
  ("context window", "block_size", "{}"),
  ("parameters", "num_params", "{:,}"),
  ("training batches", "train_batches", "{}"),
  ("time per batch (ms)", "ms_per_batch", "{:.1f}"),
  ("final training loss", "final_train_loss", "{:.4f}"),
  ("test batches", "test_batches", "{}"),
  ("inference time per token (ms)", "ms_per_token", "{:.2f}"),
  ("average test loss", "test_loss", "{:.4f}"),
)


@dataclasses.dataclass(frozen=True)
class Row:
  """One model of the comparison: its run name, arch and model-section overrides."""

  name: str
  arch: str
  overrides: tuple[tuple[str, int], ...] = ()


_ROW = re.compile(r"^\s*([a-z_]+)\s*(?:\(([^)]*)\))?\s*$")


def parse_rows(config) -> list[Row]:
  """The rows of `compare.models`: comma-separated `arch` or `arch(key=value ...)`, keys
  from ROW_KEYS overriding the shared `model` section for that row. A row's name is its
  arch, with `-t<k>` appended when it is scored on the token k ahead (k > 1)."""
  text = str(config.compare.models)
  rows = []
  for entry in text.split(","):
    if not entry.strip():
      continue
    match = _ROW.match(entry)
    if not match or match.group(1) not in ARCHS:
      raise errors.ConfigError(
        f"compare.models entry {entry.strip()!r} in {text!r}: use an arch from "
        f"{', '.join(ARCHS)}, optionally with overrides as in "
        "'conv_attention(n_embd=48 block_size=1024 target_offset=64)'."
      )
    overrides = []
    for item in (match.group(2) or "").split():
      key, _, value = item.partition("=")
      if key not in ROW_KEYS or not re.fullmatch(r"\d+", value):
        raise errors.ConfigError(
          f"compare.models override {item!r} in {entry.strip()!r}: use key=integer with a "
          f"key from {', '.join(ROW_KEYS)}."
        )
      overrides.append((key, ROW_KEYS[key](value)))
    arch = match.group(1)
    offset = dict(overrides).get("target_offset", config.model.get("target_offset", 1))
    name = arch if offset == 1 else f"{arch}-t{offset}"
    rows.append(Row(name, arch, tuple(overrides)))
  names = [r.name for r in rows]
  if not rows or len(set(names)) != len(names):
    raise errors.ConfigError(
      f"compare.models={text!r} must name at least one model and each row once (rows "
      f"named {names}); rows of one arch differ by target_offset."
    )
  return rows


def model_names(config) -> list[str]:
  return [r.name for r in parse_rows(config)]


def run_config(config: ml_collections.ConfigDict, row: Row) -> ml_collections.ConfigDict:
  """The config of one row's run: the shared config with the row's job and the row's arch's
  model section (the keys it declares from the shared section, then the row's overrides).
  An override the row's arch does not declare (target_offset for gpt) is refused."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.name = f"{config.name}-{row.name}"
  c.job = "progressive" if row.arch == "progressive" else "train"
  section = models.section_for(row.arch, config.model)
  for key, value in row.overrides:
    if key not in section:
      raise errors.ConfigError(
        f"compare.models row {row.name!r}: {models.undeclared_key_error(key, row.arch)}"
      )
    section[key] = value
  c.model = ml_collections.ConfigDict(section)
  return c


def objective(c: ml_collections.ConfigDict) -> str:
  offset = int(c.model.get("target_offset", 1))
  return "next token" if offset == 1 else f"token +{offset}"


def embedding_size(c: ml_collections.ConfigDict) -> str:
  """The width; for conv_attention, the finest to the coarsest level's ("48 - 384")."""
  d = int(c.model.n_embd)
  if c.model.arch != "conv_attention":
    return str(d)
  return f"{d} - {d * 2 ** int(c.model.get('n_levels', 3))}"


def count_parameters(c: ml_collections.ConfigDict) -> int:
  """Parameters of the row's model as trained last (progressive: its final stage,
  adapters included), counted from shapes without initialising anything."""
  abstract = nnx.eval_shape(lambda: models.build(c.model, 0))  # progressive: the last stage.
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param))))


def steady_ms_per_batch(records: list[dict], batch_tokens: int) -> float | None:
  """Median step time of the logged train steps of the last stage, first one excluded
  (it includes compilation)."""
  train = [r for r in records if "train_loss" in r and r.get("tokens_per_s")]
  if train and "stage" in train[-1]:
    train = [r for r in train if r["stage"] == train[-1]["stage"]]
  rates = [r["tokens_per_s"] for r in train[1:]] or [r["tokens_per_s"] for r in train]
  return 1000.0 * batch_tokens / statistics.median(rates) if rates else None


def inference_ms_per_token(workdir: pathlib.Path, n_tokens: int, seed: int) -> float:
  """Generation time per new token (after a first, compiling call) at batch size 1."""
  model, config, _ = run_load.load_model(workdir)
  generator = generate.Generator(model)
  prompt = [[0] * 8]
  params = generate.SamplingParams(temperature=1.0)
  generator.generate(prompt, n_tokens, params=params, seed=seed)
  start = time.perf_counter()
  generator.generate(prompt, n_tokens, params=params, seed=seed + 1)
  del config
  return 1000.0 * (time.perf_counter() - start) / n_tokens


def run(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  train_one: Callable[[ml_collections.ConfigDict, str], Any],
) -> list[dict]:
  """Trains every model of `compare.models` with `train_one(config, workdir)` (the job
  registry's `run`) and writes the table and the plot."""
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  specs = parse_rows(config)
  names = [r.name for r in specs]
  configs = {r.name: run_config(config, r) for r in specs}
  for c in configs.values():
    config_validate.validated(c)
  rows = []
  for name in names:
    c = configs[name]
    run_dir = workdir / name
    print(f"=== {name} -> {run_dir}", flush=True)
    result = train_one(c, str(run_dir))
    if result.interrupted:
      raise errors.TrainingError(
        f"Training {name} was interrupted; re-run the same command to resume."
      )
    records = metrics_lib.read_metrics(run_dir)
    tc, shape = c.train, lm_shape(c)
    rows.append(
      {
        "model": name,
        "objective": objective(c),
        "heads": c.model.n_head,
        "n_embd": embedding_size(c),
        "micro_batch": shape.micro_batch,
        "block_size": c.model.block_size,
        "num_params": count_parameters(c),
        "train_batches": result.step,
        "ms_per_batch": steady_ms_per_batch(records, shape.per_step),
        "final_train_loss": result.final_train_loss,
        "test_batches": tc.eval_batches,
        "ms_per_token": inference_ms_per_token(
          run_dir, int(config.compare.inference_tokens), tc.seed
        ),
        "test_loss": result.final_val_loss,
        "stage_steps": getattr(result, "stage_steps", None),
      }
    )
  (workdir / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
  table = results_table(rows)
  (workdir / "results.md").write_text(table + "\n")
  plot_losses(workdir, names, workdir / "loss_curves.png")
  print(table, flush=True)
  print(f"Wrote {workdir / 'results.md'} and {workdir / 'loss_curves.png'}", flush=True)
  return rows


def results_table(rows: list[dict]) -> str:
  """Markdown table with the comparison's columns."""
  return md.table(
    [title for title, _, _ in COLUMNS],
    (
      [fmt.format(row[key]) if row.get(key) is not None else "n/a" for _, key, fmt in COLUMNS]
      for row in rows
    ),
  )


def plot_losses(workdir: pathlib.Path, names: list[str], out: pathlib.Path) -> None:
  """Train loss per step and test-loss points of every run; stage switches dotted."""
  import matplotlib  # Imported here: matplotlib (plots only; slow to import).

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # Imported here: matplotlib (plots only; slow to import).

  fig, ax = plt.subplots(figsize=(9, 5.5))
  for i, name in enumerate(names):
    color = f"C{i}"
    records = metrics_lib.read_metrics(workdir / name)
    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    if train:
      ax.plot(*zip(*train), color=color, lw=1.2, label=f"{name} train")
    if val:
      ax.plot(*zip(*val), "o--", color=color, ms=4, lw=0.8, label=f"{name} test")
    switches = [
      r["step"]
      for r in records
      if "stage" in r and "train_loss" not in r and "val_loss" not in r and r["stage"] > 1
    ]
    for j, step in enumerate(switches):
      ax.axvline(
        step, color=color, ls=":", lw=1.0, label=f"{name} stage switch" if j == 0 else None
      )
      ax.annotate(
        f"stage {j + 2}",
        (step, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(3, -12),
        textcoords="offset points",
        fontsize=8,
        color=color,
      )
  ax.set_xlabel("training batch (step)")
  ax.set_ylabel("loss on the row's objective (nats)")
  ax.set_title("GPT-2 baseline vs convolution-attention vs progressive")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out, dpi=120)
  plt.close(fig)
