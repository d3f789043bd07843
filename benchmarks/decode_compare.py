"""Decoding side by side in one process: the minimal reference loop, `Generator`, and HF.

Called by `python -m benchmarks.vs_pytorch --what=decode` (see there for the flags).
Greedy, batch 1, one prompt; for every system and repeat, in turn: t(1 token) and
t(n tokens), so prefill = t(1) and per-token = (t(n) - t(1)) / (n - 1), measured alike.

Systems (float32 unless named):
  floor         `benchmarks.decode_reference.WeightsFloor`: the weights' matrix-vector
                products alone, no attention or norms (what moving the weights costs)
  reference     `benchmarks.decode_reference.ReferenceDecoder`: the least code that decodes
                with a KV cache (what the bare step is for training)
  llmjax        `llmjax.inference.generate.Generator`
  torch         `GPT2LMHeadModel.generate(use_cache=True)`
  llmjax_bf16   `Generator` over `llmjax.inference.generate.cast_model(model, "bfloat16")`
  torch_bf16    the same HF model cast with `.to(torch.bfloat16)`
  llmjax_int8   `Generator(model, dtype="int8")`: int8 weights with per-output-channel
                scales, int8 activations per row, int32 accumulation
                (`llmjax.inference.quantize`)

Quality of the low precisions against float32: greedy agreement over the n new tokens and
the first divergence; with `heldout` windows, the mean log-probability per token under
each model and the mean absolute per-token difference (`log_prob_difference`).
Batched decoding (`run_batches`): tokens/s at each batch size for the float32 and int8
`Generator` and HF, the prompt repeated over the batch.

Ratios are paired per repeat (both systems timed back to back), then the median.
"""

from __future__ import annotations

import os
import statistics
import time

from benchmarks import timing


def _median(xs):
  return statistics.median(xs) if xs else None


def agreement(a: list[int], b: list[int]) -> float:
  """Share of positions where two greedy continuations agree."""
  return sum(x == y for x, y in zip(a, b)) / max(len(a), 1)


def first_divergence(a: list[int], b: list[int]) -> int:
  """Index of the first differing token (len(a) when equal): greedy decoding copies an
  early difference into everything after it, so this says more than the agreement."""
  return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))


def log_prob_difference(model, low, windows_NxT1) -> dict:
  """Mean log-probability per held-out token under `model` and `low`, and the mean absolute
  per-token difference (windows: int [N, T + 1])."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  def scores(m):
    @jax.jit
    def score(inputs, targets):
      logp = jax.nn.log_softmax(m(inputs).astype(jnp.float32), axis=-1)
      return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]

    return np.asarray(score(windows_NxT1[:, :-1], windows_NxT1[:, 1:]))

  a, b = scores(model), scores(low)
  return {
    "tokens": int(a.size),
    "mean_float32": round(float(a.mean()), 5),
    "mean_low": round(float(b.mean()), 5),
    "mean_difference": round(float(b.mean() - a.mean()), 5),
    "mean_abs_token_difference": round(float(np.abs(b - a).mean()), 5),
  }


def run(
  model,
  cfg,
  hf,
  prompt: list[int],
  n_new: int,
  repeats: int,
  dtypes=("float32", "bfloat16", "int8"),
  heldout=None,
) -> dict:
  """Times every system; returns the `decode` section of vs_pytorch's JSON."""
  import jax  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel

  from benchmarks import decode_reference  # pylint: disable=import-outside-toplevel
  from llmjax.inference import generate  # pylint: disable=import-outside-toplevel

  greedy = generate.SamplingParams(temperature=0.0)
  ids = torch.tensor([prompt])
  pure_params = jax.device_get(nnx.to_pure_dict(nnx.state(model)))
  ref = decode_reference.ReferenceDecoder(pure_params, cfg)
  floor = decode_reference.WeightsFloor(pure_params, cfg)
  generators = {"llmjax": generate.Generator(model)}
  hf_models = {"torch": hf}
  if "bfloat16" in dtypes:
    generators["llmjax_bf16"] = generate.Generator(generate.cast_model(model, "bfloat16"))
    hf_models["torch_bf16"] = _hf_copy(hf).to(torch.bfloat16)
  if "int8" in dtypes:
    generators["llmjax_int8"] = generate.Generator(model, dtype="int8")

  def jax_fn(gen):
    return lambda n: gen.generate([prompt], n, params=greedy)[0]

  def hf_fn(m):
    def gen(n):
      with torch.no_grad():
        out = m.generate(
          ids,
          attention_mask=torch.ones_like(ids),
          max_new_tokens=n,
          min_new_tokens=n,
          do_sample=False,
          use_cache=True,
          pad_token_id=0,
        )
      return out[0, len(prompt) :].tolist()

    return gen

  systems = {
    "floor": lambda n: floor.generate(prompt, n),
    "reference": lambda n: ref.generate(prompt, n),
  }
  systems.update({name: jax_fn(g) for name, g in generators.items()})
  systems.update({name: hf_fn(m) for name, m in hf_models.items()})

  tokens, first_call_s = {}, {}
  for name, fn in systems.items():  # Warm-up: compiles, and the tokens to compare.
    t0 = time.perf_counter()
    tokens[name] = fn(n_new)
    first_call_s[name] = round(time.perf_counter() - t0, 2)
    fn(1)
  compilations = {name: g.compilations for name, g in generators.items()}

  def timed(fn, n):
    t0, c0 = time.perf_counter(), time.process_time()
    fn(n)
    return time.perf_counter() - t0, time.process_time() - c0

  runs = {name: [] for name in systems}
  for _ in range(repeats):
    for name, fn in systems.items():
      (one, one_cpu), (full, full_cpu) = timed(fn, 1), timed(fn, n_new)
      runs[name].append(
        {
          "prefill_s": one,
          "per_token_s": (full - one) / (n_new - 1),
          "total_s": full,
          "cpu_per_token_s": (full_cpu - one_cpu) / (n_new - 1),
        }
      )
  for name, g in generators.items():
    if g.compilations != compilations[name] or compilations[name] != 2:
      raise AssertionError(
        f"{name}: Generator compiled {g.compilations} times (after warm-up "
        f"{compilations[name]}); expected exactly 2: one prefill and one "
        "decode loop for (batch 1, one prompt bucket)."
      )

  out = {}
  for name, rs in runs.items():
    out[name] = {
      "tokens_per_s": timing.rate(n_new, _median([x["total_s"] for x in rs]), 1),
      "prefill_ms": round(1e3 * _median([x["prefill_s"] for x in rs]), 2),
      "per_token_ms": round(1e3 * _median([x["per_token_s"] for x in rs]), 3),
      "per_token_ms_each": [round(1e3 * x["per_token_s"], 3) for x in rs],
      "cpu_ms_per_token": round(1e3 * _median([x["cpu_per_token_s"] for x in rs]), 3),
      "decode_tokens_per_s": timing.rate(1, _median([x["per_token_s"] for x in rs]), 1),
      "first_call_s": first_call_s[name],
    }
  for name, g in generators.items():
    out[name]["compilations"] = g.compilations

  def paired(num, den, key):
    """Per repeat: den's time / num's time (> 1: `num` is faster)."""
    return timing.ratios([b[key] for b in runs[den]], [a[key] for a in runs[num]])

  ratios, each = {}, {}
  pairs = {
    "generator_over_reference": ("llmjax", "reference", "per_token_s"),
    "generator_over_reference_total": ("llmjax", "reference", "total_s"),
    "generator_over_reference_cpu": ("llmjax", "reference", "cpu_per_token_s"),
    "floor_over_generator": ("floor", "llmjax", "per_token_s"),
    "floor_over_reference": ("floor", "reference", "per_token_s"),
    "llmjax_over_torch": ("llmjax", "torch", "total_s"),
    "per_token_llmjax_over_torch": ("llmjax", "torch", "per_token_s"),
    "reference_over_torch": ("reference", "torch", "total_s"),
    "llmjax_bf16_over_torch_bf16": ("llmjax_bf16", "torch_bf16", "total_s"),
    "llmjax_bf16_over_llmjax": ("llmjax_bf16", "llmjax", "total_s"),
    "llmjax_bf16_over_torch": ("llmjax_bf16", "torch", "total_s"),
    "llmjax_int8_over_llmjax": ("llmjax_int8", "llmjax", "total_s"),
    "per_token_llmjax_int8_over_llmjax": ("llmjax_int8", "llmjax", "per_token_s"),
    "llmjax_int8_over_torch": ("llmjax_int8", "torch", "total_s"),
    "floor_over_llmjax_int8": ("floor", "llmjax_int8", "per_token_s"),
  }
  for key, (num, den, field) in pairs.items():
    if num in runs and den in runs:
      xs = paired(num, den, field)
      ratios[key] = round(_median(xs), 3) if xs else None  # None: too fast to time.
      each[key] = [round(x, 3) for x in xs]
  ratios["each_repeat"] = each
  out["ratios"] = ratios
  out["goals"] = {
    "generator_over_reference>=0.9": (ratios.get("generator_over_reference") or 0) >= 0.9,
    "llmjax_over_torch>=2.5": (ratios.get("llmjax_over_torch") or 0) >= 2.5,
  }
  base = tokens["llmjax"]
  out["greedy_tokens"] = {
    "new_tokens": n_new,
    "reference_vs_llmjax_agreement": agreement(tokens["reference"], base),
    "torch_vs_llmjax_agreement": agreement(tokens["torch"], base),
  }
  if "llmjax_bf16" in tokens:
    out["greedy_tokens"].update(
      {
        "llmjax_bf16_vs_llmjax_agreement": agreement(tokens["llmjax_bf16"], base),
        "llmjax_bf16_first_divergence": first_divergence(tokens["llmjax_bf16"], base),
        "torch_bf16_vs_torch_agreement": agreement(tokens["torch_bf16"], tokens["torch"]),
        "torch_bf16_first_divergence": first_divergence(tokens["torch_bf16"], tokens["torch"]),
      }
    )
  if "llmjax_int8" in tokens:
    int8_agreement = agreement(tokens["llmjax_int8"], base)
    out["greedy_tokens"].update(
      {
        "llmjax_int8_vs_llmjax_agreement": int8_agreement,
        "llmjax_int8_first_divergence": first_divergence(tokens["llmjax_int8"], base),
      }
    )
    out["goals"]["per_token_llmjax_int8_over_llmjax>=1.5"] = (
      ratios["per_token_llmjax_int8_over_llmjax"] >= 1.5
    )
    out["goals"]["int8_greedy_agreement>=0.9"] = int8_agreement >= 0.9
  if heldout is not None:
    low = {"llmjax_bf16": "bfloat16", "llmjax_int8": "int8"}
    out["log_prob"] = {
      name: log_prob_difference(model, generate.inference_model(model, dt), heldout)
      for name, dt in low.items()
      if name in generators
    }
  out["torch_threads"] = torch.get_num_threads()
  out["cores"] = len(os.sched_getaffinity(0))
  return out


def _hf_copy(hf):
  import copy  # pylint: disable=import-outside-toplevel

  return copy.deepcopy(hf)


def run_batches(model, hf, prompt: list[int], n_new: int, batches, repeats: int) -> dict:
  """Tokens/s of batched greedy decoding (the prompt repeated `batch` times, `n_new` new
  tokens per row, prefill included): float32 and int8 `Generator` and HF, in turn per
  repeat; median over repeats."""
  import torch  # pylint: disable=import-outside-toplevel

  from llmjax.inference import generate  # pylint: disable=import-outside-toplevel

  greedy = generate.SamplingParams(temperature=0.0)
  gens = {
    "llmjax": generate.Generator(model),
    "llmjax_int8": generate.Generator(model, dtype="int8"),
  }

  def hf_gen(ids):
    with torch.no_grad():
      hf.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=n_new,
        min_new_tokens=n_new,
        do_sample=False,
        use_cache=True,
        pad_token_id=0,
      )

  out = {}
  for b in batches:
    prompts = [list(prompt)] * b
    ids = torch.tensor(prompts)
    systems = {
      name: (lambda g=g, p=prompts: g.generate(p, n_new, params=greedy)) for name, g in gens.items()
    }
    systems["torch"] = lambda ids=ids: hf_gen(ids)
    for fn in systems.values():
      fn()  # Warm-up (compiles the Generators for this batch).
    times = {name: [] for name in systems}
    for _ in range(repeats):
      for name, fn in systems.items():
        t0 = time.perf_counter()
        fn()
        times[name].append(time.perf_counter() - t0)
    row = {
      name: {
        "tokens_per_s": timing.rate(b * n_new, _median(ts), 1),
        "tokens_per_s_each": [timing.rate(b * n_new, t, 1) for t in ts],
      }
      for name, ts in times.items()
    }
    row["llmjax_over_torch"] = timing.ratio(_median(times["torch"]), _median(times["llmjax"]), 3)
    row["llmjax_int8_over_llmjax"] = timing.ratio(
      _median(times["llmjax"]), _median(times["llmjax_int8"]), 3
    )
    out[f"batch_{b}"] = row
  out["new_tokens"] = n_new
  out["repeats"] = repeats
  return out
