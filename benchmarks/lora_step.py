"""Train-step time of the progressive model's stages against the 12-layer GPT-2 baseline.

  python benchmarks/lora_step.py --preset=cpu --out=/tmp/lora_step.json
  python benchmarks/lora_step.py --preset=gpu   # GPT-2 small shape

Every variant uses the real jitted train step (`llmjax.train.step.make_train_step`) with
the optimizer its training job uses, the same batch, context and width. The variants take
turns, repeat after repeat, in one process. Prints JSON: the median milliseconds per step
of each variant and the median of its per-repeat ratio to the baseline; the target is
stage 3 (LoRA attention, full FF) <= 1.15x the baseline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from benchmarks import timing
from llmjax import models
from llmjax.config import schema as config_base
from llmjax.train import optimizer as optim_lib
from llmjax.train import progressive_task as progressive_train
from llmjax.train import step as step_lib

# The cpu preset uses a small vocabulary: with GPT-2's 50257 entries the unembedding
# would dominate a 128-wide model's step and hide what the blocks cost.
PRESETS = {
  "cpu": dict(n_embd=128, n_head=4, block_size=128, batch_size=8, vocab_size=4096),
  "gpu": dict(n_embd=768, n_head=12, block_size=512, batch_size=16, vocab_size=50257),
}


def config_for(preset: str, dtype: str) -> ml_collections.ConfigDict:
  p = PRESETS[preset]
  c = config_base.schema(("progressive",), arch="progressive")
  c.model.n_layer, c.model.n_head, c.model.n_embd = 12, p["n_head"], p["n_embd"]
  c.model.block_size, c.model.dtype = p["block_size"], dtype
  c.model.vocab_size = p["vocab_size"]
  c.train.batch_size, c.train.steps = p["batch_size"], 1000
  c.model.stage_groups, c.model.lora_rank, c.model.lora_fused = (3, 6, 12), 8, True
  return c


def compiled_step(section, tx, config):
  """A function n_steps -> seconds per step of the jitted train step (compiled, warmed up)."""
  model = models.build(section, 0)
  graphdef, state = nnx.split(model)
  train_state = step_lib.init_state(nnx.to_pure_dict(state), tx)
  schedule = optim_lib.learning_rate_schedule(config.optim, config.train.steps)
  step = jax.jit(
    step_lib.make_train_step(step_lib.lm_loss(graphdef, 0.0), tx, schedule, seed=0),
    donate_argnums=0,
  )
  b, t = config.train.batch_size, config.model.block_size
  tokens = jax.random.randint(jax.random.key(0), (1, b, t + 1), 0, config.model.vocab_size)
  batch = {"inputs": tokens[..., :-1], "targets": tokens[..., 1:]}

  def run(n_steps: int) -> float:
    nonlocal train_state
    start = time.perf_counter()
    for _ in range(n_steps):
      train_state, metrics = step(train_state, batch)
    jax.block_until_ready((train_state, metrics))
    return (time.perf_counter() - start) / n_steps

  run(3)
  return run


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
  parser.add_argument("--dtype", default="float32", help="Compute dtype (bfloat16 on GPU).")
  parser.add_argument("--steps", type=int, default=10, help="Steps per timed repeat.")
  parser.add_argument("--repeats", type=int, default=5, help="Timed repeats (median taken).")
  parser.add_argument("--out", default="", help="Also write the JSON here.")
  args = parser.parse_args()
  config = config_for(args.preset, args.dtype)

  baseline = ml_collections.ConfigDict(models.section_for("gpt", config.model))
  runners = {
    "gpt_baseline": compiled_step(
      baseline, optim_lib.make_optimizer(config.optim, config.train.steps), config
    )
  }
  tx = optim_lib.make_optimizer(config.optim, config.train.steps, progressive_train.trainable)
  for name, stage, fused in (
    ("stage1_shared", 1, True),
    ("stage2_lora", 2, True),
    ("stage3_lora_fused", 3, True),
    ("stage3_lora_unfused", 3, False),
  ):
    config.model.lora_fused = fused
    runners[name] = compiled_step(progressive_train.model_section(config, stage), tx, config)
  # Variants take turns (A B C ... A B C ...) so a drifting machine affects all alike.
  times = {name: [] for name in runners}
  for _ in range(args.repeats):
    for name, run in runners.items():
      times[name].append(run(args.steps))
  results = {name: 1000 * statistics.median(ts) for name, ts in times.items()}
  paired = {name: timing.median_ratio(ts, times["gpt_baseline"]) for name, ts in times.items()}
  report = {
    "device": f"{jax.devices()[0].device_kind} ({jax.default_backend()}, "
    f"{jax.device_count()} device(s))",
    "preset": args.preset,
    "dtype": args.dtype,
    **PRESETS[args.preset],
    "n_layer": 12,
    "lora_rank": config.model.lora_rank,
    "ms_per_step": {k: round(v, 3) for k, v in results.items()},
    "ratio_to_baseline": {k: None if v is None else round(v, 3) for k, v in paired.items()},
    "stage3_target": 1.15,
    "stage3_within_target": None
    if paired["stage3_lora_fused"] is None
    else paired["stage3_lora_fused"] <= 1.15,
    timing.TOO_FAST: sorted(k for k, v in paired.items() if v is None),
  }
  text = json.dumps(report, indent=2)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  jnp.zeros(())  # Initialise the backend before timing anything.
  main()
