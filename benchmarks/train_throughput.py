r"""Training throughput of the real train step: tokens/s, step time, MFU, compile time.

Builds the trainer's own sharded init and jitted step (`lm.build_steps`) for a config,
feeds it random tokens, times `--steps` steps after `--warmup`, and prints ONE JSON object.

  python -m benchmarks.train_throughput --config=configs/shakespeare.py:cpu
  python -m benchmarks.train_throughput --config=configs/shakespeare.py \
      --config.model.dtype=bfloat16 --config.model.block_size=1024 --config.train.batch_size=16
  python -m benchmarks.train_throughput --config=configs/shakespeare.py:cpu --depths=2,4,8,16

FLOPs per token, as nanoGPT's `estimate_mfu` (PaLM paper, appendix B):

  flops_per_token = 6 * N + 12 * L * H * Q * T

  N  parameters excluding the position embedding `wpe` (which is a lookup, not a matmul);
     the token embedding `wte` counts once, since as the tied output projection it is a
     real [D x V] matmul (V = padded vocabulary). 6N = 2N forward + 4N backward.
  L  layers, H heads, Q head dim, T block size: the attention scores and the weighted sum,
     2 * 2 * L * H * Q * T forward per token, times 3 for forward + backward.

Rematerialised recomputation is not counted (this is MFU, not hardware FLOPs utilisation).
MFU = tokens/s * flops_per_token / (peak_flops per device * devices). Peak FLOPs come from
`--peak_flops`, else a table of dense bf16/tf32 figures per GPU model, else for CPUs an
estimate from /proc/cpuinfo: cores x 2 FMA units x SIMD fp32 lanes (16 with avx512f, 8 with
avx2, else 4) x 2 FLOPs per FMA x clock.
"""

import json
import platform
import resource
import time

import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from benchmarks import machine, timing
from llmjax.cli import common as cli
from llmjax.config import validate as config_validate
from llmjax.parallel import mesh as mesh_lib
from llmjax.train import lm
from llmjax.train import metrics as metrics_lib

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Config: configs/NAME.py[:VARIANT].", lock_config=False
)
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
_PEAK_FLOPS = flags.DEFINE_float(
  "peak_flops", 0.0, "Peak FLOP/s of one device (0 = look up or estimate)."
)
_DEPTHS = flags.DEFINE_list(
  "depths",
  [],
  "Also report train-step compile time at these "
  "n_layer values, with and without model.scan_layers.",
)

# Dense peak FLOP/s per device by compute dtype (tf32 tensor cores for float32 matmuls).
GPU_PEAK_FLOPS = {
  "H200": {"bfloat16": 989e12, "float32": 494.5e12},
  "H100": {"bfloat16": 989e12, "float32": 494.5e12},
  "A100": {"bfloat16": 312e12, "float32": 156e12},
}


def cpu_peak_flops() -> tuple[float, str]:
  """The CPU's fp32 peak (`benchmarks.machine.cpu_peak`) and how it was reckoned."""
  peak = machine.cpu_peak()
  if not peak["peak_gflops"]:
    return 0.0, "unknown CPU (pass --peak_flops)"
  return peak["peak_gflops"] * 1e9, f"{peak['peak_formula']} ({peak['cpu']})"


def peak_flops_per_device(dtype: str) -> tuple[float, str]:
  if _PEAK_FLOPS.value > 0:
    return _PEAK_FLOPS.value, "--peak_flops"
  device = jax.devices()[0]
  if device.platform == "cpu":
    total, how = cpu_peak_flops()  # Fake CPU devices share the same cores.
    return total / jax.device_count(), how
  for model, peaks in GPU_PEAK_FLOPS.items():
    if model in device.device_kind:
      key = "bfloat16" if dtype in ("bfloat16", "float16") else "float32"
      return peaks[key], f"{model} dense {key} table"
  return 0.0, f"no peak known for {device.device_kind}; pass --peak_flops"


def flops_per_token(config, params) -> tuple[float, int]:
  """6N + 12 L H Q T, with N = parameters except the position embedding."""
  n = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if "wpe" not in jax.tree_util.keystr(path):
      n += int(np.prod(leaf.shape))
  mc = config.model
  attention = 12 * mc.n_layer * mc.n_head * (mc.n_embd // mc.n_head) * mc.block_size
  return 6 * n + attention, n


def random_batch(config, sharding):
  tc, mc = config.train, config.model
  rng = np.random.default_rng(0)
  local = tc.batch_size // jax.process_count()
  tokens = rng.integers(0, mc.vocab_size, (local, mc.block_size + 1), dtype=np.int32)
  host = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
  return lm.to_global_batch(host, tc.grad_accum, sharding)


def compile_seconds(config, mesh) -> float:
  steps = lm.build_steps(config, mesh)
  state = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
    steps.abstract_state,
    steps.state_shardings,
  )
  batch = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
    random_batch(config, steps.batch_sharding),
  )
  start = time.perf_counter()
  steps.train_step.lower(state, batch).compile()
  return time.perf_counter() - start


def main(argv):
  del argv
  cli.quiet_logs()
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/NAME.py[:VARIANT] is required.")
  config_validate.validate(config)
  mesh_lib.maybe_initialize_distributed()
  mesh = mesh_lib.make_mesh(config.mesh)
  steps = lm.build_steps(config, mesh)

  start = time.perf_counter()
  state = jax.block_until_ready(steps.init())
  init_s = time.perf_counter() - start
  batch = random_batch(config, steps.batch_sharding)
  start = time.perf_counter()
  train_step = steps.train_step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start

  for _ in range(_WARMUP.value):
    state, metrics = train_step(state, batch)
  jax.block_until_ready(state)
  start, cpu_start = time.perf_counter(), time.process_time()
  for _ in range(_STEPS.value):
    state, metrics = train_step(state, batch)
  jax.block_until_ready((state, metrics))
  step_time = (time.perf_counter() - start) / max(_STEPS.value, 1)
  cpu_per_step = (time.process_time() - cpu_start) / max(_STEPS.value, 1)

  tokens_per_step = config.train.batch_size * config.model.block_size
  tokens_per_s = timing.rate(tokens_per_step, step_time)
  fpt, n_params = flops_per_token(config, state["params"])
  peak, peak_source = peak_flops_per_device(config.model.dtype)
  n_devices = mesh.devices.size
  device = jax.devices()[0]
  result = {
    "config": flags.FLAGS["config"].config_filename,
    "name": config.name,
    "device": f"{n_devices} x {device.device_kind} ({device.platform})",
    "mesh": dict(mesh.shape),
    "processes": jax.process_count(),
    "dtype": config.model.dtype,
    "param_dtype": config.model.param_dtype,
    "remat": config.model.remat,
    "scan_layers": config.model.scan_layers,
    "n_layer": config.model.n_layer,
    "n_embd": config.model.n_embd,
    "block_size": config.model.block_size,
    "batch_size": config.train.batch_size,
    "grad_accum": config.train.grad_accum,
    "params": metrics_lib.count_params(state["params"]),
    "params_for_flops": n_params,
    "flops_per_token": fpt,
    "flops_formula": "6*N + 12*L*H*Q*T (N excludes wpe)",
    "tokens_per_s": tokens_per_s,
    "step_time_s": step_time,
    "process_cpu_s_per_step": cpu_per_step,  # Host CPU time: on a busy CPU, compare this.
    "mfu": tokens_per_s * fpt / (peak * n_devices) if peak and tokens_per_s else None,
    "peak_flops_per_device": peak,
    "peak_flops_source": peak_source,
    "compile_s": compile_s,
    "init_s": init_s,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "final_loss": float(metrics["train_loss"]),
    "steps": _STEPS.value,
    "warmup": _WARMUP.value,
    "jax": jax.__version__,
    "python": platform.python_version(),
  }
  timing.flag(result, "tokens_per_s")
  stats = device.memory_stats() if device.platform != "cpu" else None
  if stats and "peak_bytes_in_use" in stats:
    result["peak_device_mem_mb"] = stats["peak_bytes_in_use"] / 2**20
  if _DEPTHS.value:
    sweep = {"loop": {}, "scan": {}}
    for depth in map(int, _DEPTHS.value):
      for scan in (False, True):
        variant = ml_collections.ConfigDict(config.to_dict())
        variant.model.n_layer, variant.model.scan_layers = depth, scan
        sweep["scan" if scan else "loop"][depth] = compile_seconds(variant, mesh)
    result["compile_s_vs_depth"] = sweep
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
