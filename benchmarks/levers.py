r"""A/B of one speed lever at a time: jitted train steps of variants of the same model.

  python -m benchmarks.levers --variants=default,plain_loss,scan_layers --repeats=3

Every variant is the bare jitted train step (`llmjax.train.step.make_train_step`, donated
state, AdamW) of the default GPT-2 shape on one fixed batch; variants run in turn
(A B C A B C ...) in one process so a drifting machine affects all alike. Reported per
variant: median step time and CPU seconds per step (this process, all threads: the
per-process cost even when other processes share the cores), and the ratio of each to
the first variant, pair by pair.

Variants:
  default      the normal code path (`step.linear_cross_entropy`, unrolled blocks).
  plain_loss   the full [B, T, V] float32 logits, then `step.cross_entropy`.
  scan_layers  model.scan_layers=True.
  chunk=N      `linear_cross_entropy` with N positions per chunk (default 8192).
XLA flags act per process: compare them with two whole runs (XLA_FLAGS=... before each).
"""

from __future__ import annotations

import json
import os
import statistics
import time

from absl import app, flags

from benchmarks import timing

_VARIANTS = flags.DEFINE_list(
  "variants", ["default", "plain_loss", "scan_layers"], "Variants, the first is the reference."
)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Alternating repeats.")
_STEPS = flags.DEFINE_integer("steps", 2, "Steps per variant and repeat.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Batch size.")
_BLOCK = flags.DEFINE_integer("block_size", 256, "Sequence length.")
_N_LAYER = flags.DEFINE_integer("n_layer", 6, "Depth.")
_N_EMBD = flags.DEFINE_integer("n_embd", 384, "Width.")
_N_HEAD = flags.DEFINE_integer("n_head", 6, "Heads.")


def main(argv):
  del argv
  import functools  # pylint: disable=import-outside-toplevel

  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from llmjax import models  # pylint: disable=import-outside-toplevel
  from llmjax.config import schema as config_base  # pylint: disable=import-outside-toplevel
  from llmjax.models import loss as loss_lib  # pylint: disable=import-outside-toplevel
  from llmjax.train import optimizer as optim_lib  # pylint: disable=import-outside-toplevel
  from llmjax.train import step as step_lib  # pylint: disable=import-outside-toplevel

  c = config_base.base_config()
  c.model.n_layer, c.model.n_embd, c.model.n_head = _N_LAYER.value, _N_EMBD.value, _N_HEAD.value
  c.model.block_size, c.model.vocab_size = _BLOCK.value, 50304
  b, t = _BATCH.value, _BLOCK.value
  tx = optim_lib.make_optimizer(c.optim, c.train.steps)
  schedule = optim_lib.learning_rate_schedule(c.optim, c.train.steps)
  window = np.random.default_rng(0).integers(0, 50257, (1, b, t + 1)).astype(np.int32)
  batch = {"inputs": jnp.asarray(window[..., :-1]), "targets": jnp.asarray(window[..., 1:])}

  def plain_loss(graphdef, params, micro, step):
    del step
    model = nnx.merge(graphdef, params)
    return loss_lib.cross_entropy(model(micro["inputs"]), micro["targets"])[0]

  def chunk_loss(chunk, graphdef, params, micro, step):
    del step
    model = nnx.merge(graphdef, params)
    x, _ = model.hidden(micro["inputs"])
    table, vocab_size, dtype = model.output_head()
    return loss_lib.linear_cross_entropy(
      x, table, micro["targets"], vocab_size=vocab_size, dtype=dtype, chunk_tokens=chunk
    )[0]

  steps, states = {}, {}
  for name in _VARIANTS.value:
    mc = c.model.copy_and_resolve_references()
    loss_fn = None
    if name == "scan_layers":
      mc.scan_layers = True
    elif name == "plain_loss":
      loss_fn = plain_loss
    elif name.startswith("chunk="):
      loss_fn = functools.partial(chunk_loss, int(name.split("=")[1]))
    elif name != "default":
      raise app.UsageError(f"Unknown variant {name!r}; see --helpfull.")
    graphdef, params = nnx.split(models.build(mc, 0))
    fn = (
      step_lib.lm_loss(graphdef, 0.0)
      if loss_fn is None
      else lambda p, m, k, f=functools.partial(loss_fn, graphdef): (f(p, m, k), {})  # noqa: B008 - bound once, on purpose
    )
    steps[name] = jax.jit(step_lib.make_train_step(fn, tx, schedule, seed=0), donate_argnums=0)
    states[name] = step_lib.init_state(nnx.to_pure_dict(params), tx)
    t0 = time.perf_counter()
    states[name], m = steps[name](states[name], batch)
    jax.block_until_ready(m)
    print(
      f"{name}: first step (compile) {time.perf_counter() - t0:.1f} s, loss "
      f"{float(m['train_loss']):.5f}",
      flush=True,
    )

  wall = {k: [] for k in steps}
  cpu = {k: [] for k in steps}
  for _ in range(_REPEATS.value):
    for name, fn in steps.items():
      t0, c0 = time.perf_counter(), time.process_time()
      for _ in range(_STEPS.value):
        states[name], m = fn(states[name], batch)
      jax.block_until_ready(m)
      wall[name].append((time.perf_counter() - t0) / _STEPS.value)
      cpu[name].append((time.process_time() - c0) / _STEPS.value)
  ref = _VARIANTS.value[0]
  out = {"load_average": os.getloadavg(), "variants": {}}
  for name in steps:
    out["variants"][name] = timing.flag(
      {
        "step_s": round(statistics.median(wall[name]), 3),
        "cpu_s_per_step": round(statistics.median(cpu[name]), 3),
        "speed_vs_" + ref: timing.median_ratio(wall[ref], wall[name], 3),
        "cpu_speed_vs_" + ref: timing.median_ratio(cpu[ref], cpu[name], 3),
      },
      "speed_vs_" + ref,
      "cpu_speed_vs_" + ref,
    )
  print(json.dumps(out, indent=1))


if __name__ == "__main__":
  app.run(main)
