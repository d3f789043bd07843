"""Trains the GPT-2 baseline, the convolution-attention model and the progressive model
with one config (same data, micro-batch, context and width), then writes a results table
and one loss-curve plot (job `arch_compare`).

  python -m llmjax.main --config=configs/arch_compare.py:cpu --workdir=runs/arch

Outputs in the workdir: one run directory per model, `results.md` (markdown table),
`results.json` (the same rows) and `loss_curves.png` (train loss per step, test loss
points, progressive stage switches as dotted lines). Re-running resumes unfinished runs.
"""

from __future__ import annotations

import json
import pathlib
import statistics
import time

import ml_collections

from llmjax import config_util
from llmjax.train import metrics as metrics_lib

ARCHS = ("gpt", "conv_attention", "progressive")
COLUMNS = (
    ("model", "model", "{}"),
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


def model_names(config) -> list[str]:
  names = [n.strip() for n in str(config.compare.models).split(",") if n.strip()]
  unknown = [n for n in names if n not in ARCHS]
  if unknown or not names:
    raise ValueError(f"compare.models={config.compare.models!r}: use a comma-separated subset "
                     f"of {', '.join(ARCHS)}.")
  return names


def run_config(config: ml_collections.ConfigDict, arch: str) -> ml_collections.ConfigDict:
  """The config of one model's run: the shared config with `model.arch` and the job set."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.name = f"{config.name}-{arch}"
  c.model.arch = arch
  c.job = "progressive" if arch == "progressive" else "train"
  if arch == "conv_attention":
    c.model.target_offset = 1  # Comparisons use next-token loss.
  return c


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
  from llmjax import api  # pylint: disable=import-outside-toplevel
  from llmjax import generate  # pylint: disable=import-outside-toplevel
  model, config, _ = api.load_model(workdir)
  generator = generate.Generator(model)
  prompt = [[0] * 8]
  params = generate.SamplingParams(temperature=1.0)
  generator.generate(prompt, n_tokens, params=params, seed=seed)
  start = time.perf_counter()
  generator.generate(prompt, n_tokens, params=params, seed=seed + 1)
  del config
  return 1000.0 * (time.perf_counter() - start) / n_tokens


def train_one(c: ml_collections.ConfigDict, workdir: pathlib.Path):
  if c.job == "progressive":
    from llmjax.train import progressive as progressive_train  # pylint: disable=import-outside-toplevel
    return progressive_train.train(c, workdir)
  from llmjax.train import lm  # pylint: disable=import-outside-toplevel
  return lm.train(c, workdir)


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> list[dict]:
  """Trains every model of `compare.models` and writes the table and the plot."""
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  names = model_names(config)
  configs = {name: run_config(config, name) for name in names}
  for c in configs.values():
    config_util.validate(c)
  rows = []
  for name in names:
    c = configs[name]
    run_dir = workdir / name
    print(f"=== {name} -> {run_dir}", flush=True)
    result = train_one(c, run_dir)
    if result.interrupted:
      raise RuntimeError(f"Training {name} was interrupted; re-run the same command to resume.")
    records = metrics_lib.read_metrics(run_dir)
    tc = c.train
    rows.append({
        "model": name, "heads": c.model.n_head, "n_embd": c.model.n_embd,
        "micro_batch": tc.batch_size // tc.grad_accum, "block_size": c.model.block_size,
        "num_params": result.num_params, "train_batches": result.step,
        "ms_per_batch": steady_ms_per_batch(records, tc.batch_size * c.model.block_size),
        "final_train_loss": result.final_train_loss, "test_batches": tc.eval_batches,
        "ms_per_token": inference_ms_per_token(run_dir, int(config.compare.inference_tokens),
                                               tc.seed),
        "test_loss": result.final_val_loss,
        "stage_steps": getattr(result, "stage_steps", None),
    })
  (workdir / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
  table = results_table(rows)
  (workdir / "results.md").write_text(table + "\n")
  plot_losses(workdir, names, workdir / "loss_curves.png")
  print(table, flush=True)
  print(f"Wrote {workdir / 'results.md'} and {workdir / 'loss_curves.png'}", flush=True)
  return rows


def results_table(rows: list[dict]) -> str:
  """Markdown table with the comparison's columns."""
  lines = ["| " + " | ".join(title for title, _, _ in COLUMNS) + " |",
           "|" + "|".join("---" for _ in COLUMNS) + "|"]
  for row in rows:
    cells = [fmt.format(row[key]) if row.get(key) is not None else "n/a"
             for _, key, fmt in COLUMNS]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot_losses(workdir: pathlib.Path, names: list[str], out: pathlib.Path) -> None:
  """Train loss per step and test-loss points of every run; stage switches dotted."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

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
    switches = [r["step"] for r in records if "stage" in r and "train_loss" not in r
                and "val_loss" not in r and r["stage"] > 1]
    for j, step in enumerate(switches):
      ax.axvline(step, color=color, ls=":", lw=1.0,
                 label=f"{name} stage switch" if j == 0 else None)
      ax.annotate(f"stage {j + 2}", (step, 1.0), xycoords=("data", "axes fraction"),
                  xytext=(3, -12), textcoords="offset points", fontsize=8, color=color)
  ax.set_xlabel("training batch (step)")
  ax.set_ylabel("next-token loss (nats)")
  ax.set_title("GPT-2 baseline vs convolution-attention vs progressive")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out, dpi=120)
  plt.close(fig)
