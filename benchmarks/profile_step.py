r"""Where a train step's time goes: per-operation times of the bare jitted step, by kind.

  python -m benchmarks.profile_step                  # the vs_pytorch shape
  python -m benchmarks.profile_step --variant=plain_loss --top=20

Runs the bare jitted train step (`llmjax.train.step.make_train_step`, donated state) of a
GPT-2 shape under `jax.profiler.trace`, reads the trace back with `jax.profiler.ProfileData`
and sums the time of every XLA operation recorded on XLA's compute threads. Prints JSON:
milliseconds per step per operation kind (the name without its numeric suffix, e.g.
`ynn_fusion` = dot kernels, `copy_bitcast_fusion` = layout copies) and the largest single
operations. Times are summed over threads, so they can add up to more than the wall time.
"""

from __future__ import annotations

import collections
import json
import pathlib
import re
import tempfile

from absl import app, flags

_VARIANT = flags.DEFINE_enum(
  "variant",
  "default",
  ["default", "plain_loss"],
  "default = the normal loss path; plain_loss = full [B, T, V] logits, then step.cross_entropy.",
)
_STEPS = flags.DEFINE_integer("steps", 2, "Profiled steps (after two warm-up steps).")
_TOP = flags.DEFINE_integer("top", 12, "Largest single operations to list.")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Batch size.")
_BLOCK = flags.DEFINE_integer("block_size", 256, "Sequence length.")
_N_LAYER = flags.DEFINE_integer("n_layer", 6, "Depth.")
_N_EMBD = flags.DEFINE_integer("n_embd", 384, "Width.")
_N_HEAD = flags.DEFINE_integer("n_head", 6, "Heads.")
_VOCAB = flags.DEFINE_integer("vocab_size", 50304, "Vocabulary.")


def main(argv):
  del argv
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
  c.model.block_size, c.model.vocab_size, c.model.dropout = _BLOCK.value, _VOCAB.value, 0.0
  tx = optim_lib.make_optimizer(c.optim, c.train.steps)
  schedule = optim_lib.learning_rate_schedule(c.optim, c.train.steps)
  graphdef, params = nnx.split(models.build(c.model, 0))

  def plain_loss(params, micro, step):
    del step
    return loss_lib.cross_entropy(nnx.merge(graphdef, params)(micro["inputs"]), micro["targets"])[0]

  loss_fn = (
    (lambda p, m, k: (plain_loss(p, m, k), {}))
    if _VARIANT.value == "plain_loss"
    else (step_lib.lm_loss(graphdef, 0.0))
  )
  step = jax.jit(step_lib.make_train_step(loss_fn, tx, schedule, seed=0), donate_argnums=0)
  state = step_lib.init_state(nnx.to_pure_dict(params), tx)
  b, t = _BATCH.value, _BLOCK.value
  window = np.random.default_rng(0).integers(0, _VOCAB.value, (1, b, t + 1)).astype(np.int32)
  batch = {"inputs": jnp.asarray(window[..., :-1]), "targets": jnp.asarray(window[..., 1:])}
  for _ in range(2):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)

  trace_dir = tempfile.mkdtemp(prefix="llmjax-profile-")
  with jax.profiler.trace(trace_dir):
    for _ in range(_STEPS.value):
      state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
  path = next(pathlib.Path(trace_dir).rglob("*.xplane.pb"))
  data = jax.profiler.ProfileData.from_file(str(path))

  per_op = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      if not line.name.startswith("tf_XLAEigen"):  # XLA's compute threads.
        continue
      for event in line.events:
        if not event.name.startswith(("ThunkExecutor", "SlinkyThreadPool")):
          per_op[event.name] += event.duration_ns
  n = _STEPS.value
  per_kind = collections.Counter()
  for name, ns in per_op.items():
    per_kind[re.sub(r"\.\d+$", "", name)] += ns
  print(
    json.dumps(
      {
        "variant": _VARIANT.value,
        "device": str(jax.devices()[0]),
        "op_ms_per_step_total": round(sum(per_op.values()) / n / 1e6, 1),
        "ms_per_step_by_kind": {k: round(v / n / 1e6, 1) for k, v in per_kind.most_common()},
        "largest_ops_ms_per_step": {
          k: round(v / n / 1e6, 1) for k, v in per_op.most_common(_TOP.value)
        },
        "trace": str(path),
      },
      indent=1,
    )
  )


if __name__ == "__main__":
  app.run(main)
