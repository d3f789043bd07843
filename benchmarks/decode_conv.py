"""Convolution-attention decoding against the GPT baseline at the same width, one process.

  python -m benchmarks.decode_conv                      # width 128, context 256, 128 new tokens
  python -m benchmarks.decode_conv --n_embd=192 --n_head=6 --out=/tmp/decode_conv.json

Both models have 12 blocks (GPT: 12 layers; conv-attention: 3 levels x 4 blocks, base
width = the GPT's width, doubling per compression) and GPT-2's vocabulary; random
weights, greedy, batch 1, an 8-token prompt. Systems, timed in turn in every repeat:

  gpt           `Generator` over the GPT (KV cache)
  conv_cached   `Generator` over conv-attention (per-level caches)
  conv_window   conv-attention without a cache: the whole window runs for every new token
                (how it decoded before it had caches; the correctness reference)

Per token = (t(n tokens) - t(1 token)) / (n - 1), so the prefill is not counted. Prints
JSON with each system's median ms per token, the per-repeat paired ratios (median), the
goal `conv_cached_over_gpt <= 2.5` and whether cached and window decoding agree.
"""

from __future__ import annotations

import os
import statistics
import time

from absl import app, flags

from benchmarks import machine, timing

_N_EMBD = flags.DEFINE_integer("n_embd", 128, "GPT width = conv-attention base width.")
_N_HEAD = flags.DEFINE_integer("n_head", 4, "Heads in every block.")
_BLOCK = flags.DEFINE_integer("block_size", 256, "Context (a multiple of fan_in**3).")
_FAN_IN = flags.DEFINE_integer("fan_in", 4, "conv-attention positions per compression.")
_VOCAB = flags.DEFINE_integer("vocab_size", 50257, "Vocabulary (GPT-2's).")
_NEW = flags.DEFINE_integer("new_tokens", 128, "New tokens per timed call.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats (systems take turns).")
_OUT = flags.DEFINE_string("out", "", "Also write the JSON here.")

PROMPT_LEN = 8


def build(arch: str):
  from llmjax import models  # pylint: disable=import-outside-toplevel
  from llmjax.config import schema as config_base  # pylint: disable=import-outside-toplevel

  c = config_base.base_config(arch)
  shape = dict(n_layer=12, n_head=_N_HEAD.value, n_embd=_N_EMBD.value, block_size=_BLOCK.value)
  shape.update(vocab_size=_VOCAB.value, fan_in=_FAN_IN.value)
  c.model.update({k: v for k, v in shape.items() if k in c.model})  # The keys arch declares.
  return models.build(c.model, 0)


def main(argv):
  del argv
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from llmjax.inference import generate  # pylint: disable=import-outside-toplevel

  greedy = generate.SamplingParams(temperature=0.0)
  prompt = np.random.default_rng(0).integers(0, _VOCAB.value, PROMPT_LEN).tolist()
  gpt, conv = build("gpt"), build("conv_attention")
  gpt_gen, conv_gen = generate.Generator(gpt), generate.Generator(conv)
  window = generate.WindowGreedy(conv)
  systems = {
    "gpt": lambda n: gpt_gen.generate([prompt], n, params=greedy)[0],
    "conv_cached": lambda n: conv_gen.generate([prompt], n, params=greedy)[0],
    "conv_window": lambda n: window.generate([prompt], n)[0],
  }
  n = _NEW.value
  tokens = {}
  for name, fn in systems.items():  # Compiles, and the tokens to compare.
    tokens[name] = fn(n)
    fn(1)

  def seconds(fn, k):
    t0 = time.perf_counter()
    fn(k)
    return time.perf_counter() - t0

  per_token = {name: [] for name in systems}
  for _ in range(_REPEATS.value):
    for name, fn in systems.items():
      one, full = seconds(fn, 1), seconds(fn, n)
      per_token[name].append((full - one) / (n - 1))

  def paired(num, den):
    return timing.median_ratio(per_token[num], per_token[den])

  params = {
    "gpt": sum(x.size for x in jax.tree.leaves(jax.device_get(gpt_gen.state))),
    "conv_attention": sum(x.size for x in jax.tree.leaves(jax.device_get(conv_gen.state))),
  }
  result = {
    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    "cpu": machine.cpu_model(),
    "cores": len(os.sched_getaffinity(0)),
    "load_average_start": os.getloadavg(),
    "jax": jax.__version__,
    "device": str(jax.devices()[0].device_kind),
    "shape": {
      "n_embd": _N_EMBD.value,
      "n_head": _N_HEAD.value,
      "blocks": 12,
      "block_size": _BLOCK.value,
      "fan_in": _FAN_IN.value,
      "vocab_size": _VOCAB.value,
      "prompt": PROMPT_LEN,
      "new_tokens": n,
      "batch": 1,
      "repeats": _REPEATS.value,
    },
    "parameters": params,
    "per_token_ms": {k: round(1e3 * statistics.median(v), 3) for k, v in per_token.items()},
    "per_token_ms_each": {k: [round(1e3 * x, 3) for x in v] for k, v in per_token.items()},
    "ratios": {
      "conv_cached_over_gpt": round(paired("conv_cached", "gpt"), 3),
      "conv_window_over_conv_cached": round(paired("conv_window", "conv_cached"), 2),
    },
    "cached_equals_window": tokens["conv_cached"] == tokens["conv_window"],
  }
  result["goals"] = {"conv_cached_over_gpt<=2.5": result["ratios"]["conv_cached_over_gpt"] <= 2.5}
  machine.emit(result, _OUT.value)


if __name__ == "__main__":
  app.run(main)
