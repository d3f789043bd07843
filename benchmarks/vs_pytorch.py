r"""llmjax vs PyTorch (`transformers` GPT-2) on the same machine: training and decoding.

  python -m benchmarks.vs_pytorch                      # default shape, train + decode
  python -m benchmarks.vs_pytorch --what=decode --repeats=5

Needs the `bench` extra (torch, transformers). One process, one model shape: GPT-2 with
6 layers, 6 heads, width 384, context 256, batch 8, vocabulary 50304, float32, no
dropout, AdamW (betas 0.9/0.95, weight decay 0.1, global-norm clip 1.0). Both frameworks
start from the same weights (llmjax's initialisation copied into `GPT2LMHeadModel`), so
their first losses agree and greedy decoding produces the same tokens.

Training, per repeat, in turn:
  trainer  `llmjax.train.lm.train` itself on the bundled Shakespeare corpus: Grain
           input, metrics fetched one step late, evaluation and checkpoint hooks on, a
           checkpoint saved at the end. Step times come from the run's metrics.jsonl
           (`elapsed_s` of consecutive steps; the first step of each run is left out).
           Every repeat is a fresh run; the compiled step comes from JAX's persistent
           compilation cache after the first.
  bare     the same jitted step (`llmjax.train.step.make_train_step`, donated state) on
           one fixed device-resident batch, no loop around it.
  torch    `GPT2LMHeadModel` + `torch.optim.AdamW`, eager, loss by `F.cross_entropy` on
           the logits (no label-shift copy), `clip_grad_norm_`.
Decoding (`benchmarks/decode_compare.py`): greedy, batch 1, 16-token prompt, 128 new
tokens: the weights-only floor and the minimal KV-cache loop of
`benchmarks/decode_reference.py`, `llmjax.inference.generate.Generator` and `GPT2LMHeadModel.generate(use_cache=True)`, in float32,
then Generator and HF with the parameters cast to bfloat16, and the int8 Generator
(`Generator(model, dtype="int8")`), with each low precision's greedy agreement with
float32 and log-probability difference on held-out Shakespeare windows. Prefill = a
1-token generation; per-token cost = (t(128) - t(1)) / 127, measured the same way for all.
Then batched decoding (`--decode_batches`, default 1, 8, 32): tokens/s of the float32 and
int8 Generator and HF at each batch, in the same JSON (`decode.batches`).

Prints one JSON object (also written to --out): tokens/s per system (median over
repeats), paired ratios, compile time, peak RSS per phase, achieved GFLOP/s and its share
of the CPU's peak (cores x FMA units x SIMD lanes x 2 x clock; see `benchmarks.machine.cpu_peak`).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

from absl import app, flags, logging

from benchmarks import machine, timing

_WHAT = flags.DEFINE_list("what", ["train", "decode"], "Benchmarks to run: train, decode.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Alternating repeats of each system.")
_STEPS = flags.DEFINE_integer("steps", 4, "Timed training steps per system and repeat.")
_N_LAYER = flags.DEFINE_integer("n_layer", 6, "Transformer blocks.")
_N_HEAD = flags.DEFINE_integer("n_head", 6, "Attention heads.")
_N_EMBD = flags.DEFINE_integer("n_embd", 384, "Width.")
_BLOCK = flags.DEFINE_integer("block_size", 256, "Context length (training sequence length).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Training batch size.")
_VOCAB = flags.DEFINE_integer("vocab_size", 50304, "Vocabulary (a multiple of 64).")
_PROMPT = flags.DEFINE_integer("prompt_tokens", 16, "Decode prompt length.")
_NEW = flags.DEFINE_integer("new_tokens", 128, "Decode new tokens.")
_FMA_UNITS = flags.DEFINE_integer(
  "fma_units",
  0,
  "FMA units per core for the peak (0 = guess: 2 on AVX-512 server cores, else 2 with FMA).",
)
_OUT = flags.DEFINE_string("out", "", "Also write the JSON here.")
_DTYPES = flags.DEFINE_list(
  "decode_dtypes",
  ["float32", "bfloat16", "int8"],
  "Decode dtypes: float32 (floor, reference, llmjax, torch), bfloat16 "
  "(llmjax and torch with parameters cast) and int8 (llmjax, `llmjax.inference.quantize`).",
)
_BATCHES = flags.DEFINE_list(
  "decode_batches", ["1", "8", "32"], "Batch sizes of the batched-decoding rows ('' = none)."
)
_HELDOUT = flags.DEFINE_integer(
  "heldout_windows", 8, "Held-out Shakespeare windows scored for the low precisions' log-probs."
)


# ----------------------------------------------------------------------------- machine


def train_flops_per_token(n_layer, n_embd, block, vocab) -> float:
  """6 x (block + unembedding parameters) + 12 x layers x width x context (attention).

  Embedding lookups cost nothing; the tied table counts once, as the output projection;
  attention scores and values are counted over the full square (as the kernels compute).
  """
  block_params = n_layer * (12 * n_embd * n_embd + 13 * n_embd)
  return 6 * (block_params + vocab * n_embd) + 12 * n_layer * n_embd * block


class PeakRss:
  """Peak resident memory of this process during a phase (Linux clear_refs reset)."""

  def __enter__(self):
    try:
      pathlib.Path("/proc/self/clear_refs").write_text("5")
    except OSError:
      pass
    return self

  def __exit__(self, *exc):
    self.mib = None
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
      if line.startswith("VmHWM:"):
        self.mib = round(int(line.split()[1]) / 1024, 1)


def median(xs):
  return statistics.median(xs) if xs else None


# ----------------------------------------------------------------------------- models


def llmjax_config(workdir_root: str):
  from llmjax.config import schema as config_base  # pylint: disable=import-outside-toplevel

  c = config_base.base_config()
  c.name = "vs-pytorch"
  c.model.n_layer, c.model.n_head, c.model.n_embd = _N_LAYER.value, _N_HEAD.value, _N_EMBD.value
  c.model.block_size, c.model.vocab_size = _BLOCK.value, _VOCAB.value
  c.model.dropout, c.model.dtype, c.model.param_dtype = 0.0, "float32", "float32"
  c.train.batch_size = _BATCH.value
  c.train.steps = _STEPS.value + 1  # The first step of every run is not timed.
  c.train.log_every = 1
  c.train.eval_every = 0  # Evaluate at the end only (real runs: every few hundred steps).
  c.train.eval_batches = 1
  c.train.checkpoint_every = 500
  c.train.sample_tokens = 0
  c.data.source, c.data.tokenizer = "shakespeare", "gpt2"
  del workdir_root
  return c


def hf_model_from_llmjax(params, cfg):
  """A `GPT2LMHeadModel` holding exactly llmjax's GPT parameters."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from transformers import GPT2Config, GPT2LMHeadModel  # pylint: disable=import-outside-toplevel

  d = cfg.n_embd
  hf = GPT2LMHeadModel(
    GPT2Config(
      vocab_size=cfg.vocab_size,
      n_positions=cfg.block_size,
      n_embd=d,
      n_layer=cfg.n_layer,
      n_head=cfg.n_head,
      resid_pdrop=0.0,
      embd_pdrop=0.0,
      attn_pdrop=0.0,
      layer_norm_epsilon=1e-5,
      activation_function="gelu_new",
      tie_word_embeddings=True,
    )
  )
  p = {k: v for k, v in _flat(params).items()}
  sd = {
    "transformer.wte.weight": p["wte"][: cfg.vocab_size],
    "transformer.wpe.weight": p["wpe"],
    "transformer.ln_f.weight": p["ln_f.scale"],
    "transformer.ln_f.bias": p["ln_f.bias"],
  }
  for i in range(cfg.n_layer):
    h, o = f"h.{i}.", f"transformer.h.{i}."
    sd.update(
      {
        o + "ln_1.weight": p[h + "ln_1.scale"],
        o + "ln_1.bias": p[h + "ln_1.bias"],
        o + "ln_2.weight": p[h + "ln_2.scale"],
        o + "ln_2.bias": p[h + "ln_2.bias"],
        o + "attn.c_attn.weight": p[h + "attn.c_attn"].reshape(d, 3 * d),
        o + "attn.c_attn.bias": p[h + "attn.c_attn_bias"].reshape(3 * d),
        o + "attn.c_proj.weight": p[h + "attn.c_proj"].reshape(d, d),
        o + "attn.c_proj.bias": p[h + "attn.c_proj_bias"],
        o + "mlp.c_fc.weight": p[h + "mlp.c_fc"],
        o + "mlp.c_fc.bias": p[h + "mlp.c_fc_bias"],
        o + "mlp.c_proj.weight": p[h + "mlp.c_proj"],
        o + "mlp.c_proj.bias": p[h + "mlp.c_proj_bias"],
      }
    )
  sd = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in sd.items()}
  missing, unexpected = hf.load_state_dict(sd, strict=False)
  missing = [k for k in missing if k != "lm_head.weight" and not k.endswith(".attn.bias")]
  if missing or unexpected:
    raise RuntimeError(f"Weight copy mismatch: missing {missing}, unexpected {unexpected}.")
  hf.tie_weights()
  return hf


def _flat(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    name = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flat(v, name + "."))
    else:
      out[name] = v
  return out


# ----------------------------------------------------------------------------- training


def bench_train(result: dict) -> None:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from llmjax import models  # pylint: disable=import-outside-toplevel
  from llmjax.train import lm  # pylint: disable=import-outside-toplevel
  from llmjax.train import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  from llmjax.train import optimizer as optim_lib  # pylint: disable=import-outside-toplevel
  from llmjax.train import step as step_lib  # pylint: disable=import-outside-toplevel

  root = tempfile.mkdtemp(prefix="llmjax-vs-pytorch-")
  config = llmjax_config(root)
  b, t, v = _BATCH.value, _BLOCK.value, _VOCAB.value
  tokens_per_step = b * t
  steps = _STEPS.value

  # Bare jitted step, same model, optimizer and schedule as the trainer builds.
  model = models.build(config.model, config.train.seed)
  graphdef, params = nnx.split(model)
  params = nnx.to_pure_dict(params)
  tx = optim_lib.make_optimizer(config.optim, config.train.steps)
  schedule = optim_lib.learning_rate_schedule(config.optim, config.train.steps)
  bare_step = jax.jit(
    step_lib.make_train_step(step_lib.lm_loss(graphdef, 0.0), tx, schedule, seed=config.train.seed),
    donate_argnums=0,
  )
  rng = np.random.default_rng(0)
  window = rng.integers(0, 50257, (b, t + 1)).astype(np.int32)
  batch = {"inputs": jnp.asarray(window[None, :, :-1]), "targets": jnp.asarray(window[None, :, 1:])}
  state = step_lib.init_state(jax.tree.map(jnp.array, params), tx)
  with PeakRss() as rss_compile:
    t0 = time.perf_counter()
    compiled = bare_step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0

  # PyTorch, starting from the same weights.
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  hf = hf_model_from_llmjax(jax.device_get(params), models.model_config(config.model))
  hf.train()
  decay = [
    p for n, p in hf.named_parameters() if p.dim() >= 2 and "wte" not in n and "wpe" not in n
  ]
  no_decay = [
    p for n, p in hf.named_parameters() if not (p.dim() >= 2 and "wte" not in n and "wpe" not in n)
  ]
  opt = torch.optim.AdamW(
    [
      {"params": decay, "weight_decay": config.optim.weight_decay},
      {"params": no_decay, "weight_decay": 0.0},
    ],
    lr=config.optim.learning_rate,
    betas=(config.optim.beta1, config.optim.beta2),
    eps=config.optim.eps,
  )
  x_t = torch.from_numpy(window[:, :-1].astype(np.int64))
  y_t = torch.from_numpy(window[:, 1:].astype(np.int64))

  def torch_step():
    logits = hf(input_ids=x_t).logits
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y_t.view(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(hf.parameters(), config.optim.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()

  first_losses = {}
  state, m = compiled(state, batch)
  first_losses["bare"] = float(m["train_loss"])
  first_losses["torch"] = torch_step()

  def run_trainer(r: int) -> dict:
    workdir = pathlib.Path(root) / f"trainer-{r}"
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
      res = lm.train(config, workdir)
    total = time.perf_counter() - t0
    recs = [x for x in metrics_lib.read_metrics(workdir) if "train_loss" in x]
    times = [x["elapsed_s"] for x in recs]
    # Record i is written when step i's metrics arrive, i.e. when it finished; step i + 1
    # was dispatched before that, so consecutive differences are steady-state step times.
    step_s = [b_ - a_ for a_, b_ in zip(times, times[1:])]
    return {
      "step_s": sum(step_s) / len(step_s) if step_s else None,
      "first_step_s": times[0] if times else None,
      "run_overhead_s": total - sum(step_s),
      "first_loss": recs[0]["train_loss"],
      "steps": res.step,
    }

  def run_bare() -> dict:
    nonlocal state
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
      state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    return {
      "step_s": (time.perf_counter() - t0) / steps,
      "cpu_s": (time.process_time() - c0) / steps,
    }

  def run_torch() -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
      torch_step()
    return {
      "step_s": (time.perf_counter() - t0) / steps,
      "cpu_s": (time.process_time() - c0) / steps,
    }

  runs = {"trainer": [], "bare": [], "torch": []}
  rss = {}
  for r in range(_REPEATS.value):
    for name, fn in (
      ("trainer", lambda r=r: run_trainer(r)),
      ("bare", run_bare),
      ("torch", run_torch),
    ):
      with PeakRss() as peak:
        runs[name].append(fn())
      rss[name] = max(rss.get(name) or 0, peak.mib or 0)
      print(
        f"repeat {r} {name}: {timing.rate(tokens_per_step, runs[name][-1]['step_s'], 0)} tokens/s",
        file=sys.stderr,
        flush=True,
      )

  flops_per_token = train_flops_per_token(_N_LAYER.value, _N_EMBD.value, t, v)
  peak = machine.cpu_peak(_FMA_UNITS.value)
  out = {}
  for name, rs in runs.items():
    tps = [timing.rate(tokens_per_step, x["step_s"]) for x in rs]
    timed = [x for x in tps if x is not None]
    gflops = median(timed) * flops_per_token / 1e9 if timed else None
    out[name] = {
      "tokens_per_s": round(median(timed), 1) if timed else None,
      "tokens_per_s_each": [None if x is None else round(x, 1) for x in tps],
      "step_s": round(median(ts), 4)
      if (ts := [x["step_s"] for x in rs if timing.timed(x["step_s"])])
      else None,
      "achieved_gflops": None if gflops is None else round(gflops, 1),
      "share_of_peak": None if gflops is None else timing.ratio(gflops, peak["peak_gflops"], 3),
      "peak_rss_mib": rss[name],
    }
    timing.flag(out[name], "tokens_per_s", "step_s")
    if "cpu_s" in rs[0]:
      out[name]["cpu_s_per_step"] = round(median([x["cpu_s"] for x in rs]), 3)
  out["trainer"]["first_step_s_each_run"] = [x["first_step_s"] for x in runs["trainer"]]
  out["trainer"]["run_overhead_s_each_run"] = [
    round(x["run_overhead_s"], 2) for x in runs["trainer"]
  ]
  out["bare"]["compile_s"] = round(compile_s, 2)
  out["bare"]["compile_peak_rss_mib"] = rss_compile.mib
  first_losses["trainer"] = runs["trainer"][0]["first_loss"]

  def paired(a, b_):
    return [
      timing.ratio(runs[b_][i]["step_s"], runs[a][i]["step_s"], 3) for i in range(len(runs[a]))
    ]

  def median_paired(a, b_):
    timed = [x for x in paired(a, b_) if x is not None]
    return round(median(timed), 3) if timed else None

  out["ratios"] = {
    "trainer_over_torch": median_paired("trainer", "torch"),
    "bare_over_torch": median_paired("bare", "torch"),
    "trainer_over_bare": median_paired("trainer", "bare"),
    "each_repeat": {
      "trainer_over_torch": paired("trainer", "torch"),
      "bare_over_torch": paired("bare", "torch"),
      "trainer_over_bare": paired("trainer", "bare"),
    },
  }
  timing.flag(out["ratios"], "trainer_over_torch", "bare_over_torch", "trainer_over_bare")
  out["goals"] = {
    key: value >= bound
    for key, value, bound in (
      ("trainer_over_torch>=1.25", out["ratios"]["trainer_over_torch"], 1.25),
      ("trainer_within_5pct_of_bare", out["ratios"]["trainer_over_bare"], 0.95),
    )
    if value is not None  # Judged only where both times were measured.
  }
  out["first_loss"] = {k: round(x, 5) for k, x in first_losses.items()}
  out["flops_per_token"] = flops_per_token
  result["train"] = out


# ----------------------------------------------------------------------------- decoding


def bench_decode(result: dict) -> None:
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from benchmarks import decode_compare  # pylint: disable=import-outside-toplevel
  from llmjax import models  # pylint: disable=import-outside-toplevel

  config = llmjax_config("")
  model = models.build(config.model, config.train.seed)
  cfg = models.model_config(config.model)
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  hf = hf_model_from_llmjax(jax.device_get(nnx.to_pure_dict(nnx.state(model))), cfg).eval()
  prompt = np.random.default_rng(1).integers(0, 50257, _PROMPT.value).tolist()
  heldout = None
  if _HELDOUT.value:
    from llmjax.data import sources  # pylint: disable=import-outside-toplevel
    from llmjax.data import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel

    text = sources.read_source(config.data).text
    ids = np.asarray(tokenizer_lib.get_tokenizer("gpt2").encode(text[-len(text) // 10 :]))
    starts = np.random.default_rng(0).integers(0, len(ids) - cfg.block_size - 1, _HELDOUT.value)
    heldout = np.stack([ids[s : s + cfg.block_size + 1] for s in starts]).astype(np.int32)
  with PeakRss() as rss:
    out = decode_compare.run(
      model,
      cfg,
      hf,
      prompt,
      _NEW.value,
      _REPEATS.value,
      dtypes=_DTYPES.value,
      heldout=heldout,
    )
  out["peak_rss_mib_all_systems"] = rss.mib
  batches = [int(b) for b in _BATCHES.value if b]
  if batches:
    out["batches"] = decode_compare.run_batches(
      model, hf, prompt, _NEW.value, batches, max(1, _REPEATS.value - 1)
    )
  result["decode"] = out


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Checkpoint libraries log every save at INFO.
  import jax  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  cache = tempfile.mkdtemp(prefix="llmjax-jax-cache-")
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  result = {
    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    "command": " ".join(sys.argv),
    "machine": machine.cpu_peak(_FMA_UNITS.value),
    "load_average_start": os.getloadavg(),
    "versions": {
      "python": platform.python_version(),
      "jax": jax.__version__,
      "torch": torch.__version__,
      "transformers": transformers.__version__,
    },
    "shape": {
      "n_layer": _N_LAYER.value,
      "n_head": _N_HEAD.value,
      "n_embd": _N_EMBD.value,
      "block_size": _BLOCK.value,
      "batch_size": _BATCH.value,
      "vocab_size": _VOCAB.value,
      "dtype": "float32",
    },
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
  if "train" in _WHAT.value:
    bench_train(result)
  if "decode" in _WHAT.value:
    bench_decode(result)
  result["load_average_end"] = os.getloadavg()
  machine.emit(result, _OUT.value)


if __name__ == "__main__":
  app.run(main)
