r"""What sampling in bfloat16 costs a trained model: agreement with float32 and log-probs.

  python -m llmjax.main --config=configs/shakespeare.py:cpu --workdir=runs/shakespeare
  python -m benchmarks.bf16_quality --workdir=runs/shakespeare

Restores the run (`llmjax.api.Sampler`), casts it with `llmjax.inference.generate.cast_model(model,
"bfloat16")` and compares, on held-out text (by default the tail of the run's corpus, the
validation split, `data.val_fraction` of it):

  greedy agreement   for --prompts prompts of --prompt_tokens tokens taken from the held-out
                     text, 128 (--new_tokens) greedy tokens in float32 and in bfloat16: the
                     share of equal positions and the first position that differs;
  log-probability    the mean log-probability per token of the held-out windows under
                     both models, their difference, and the mean absolute per-token
                     difference.

Prints one JSON object (also written to --out).
"""

from __future__ import annotations

import pathlib
import statistics
import time

from absl import app, flags

from benchmarks import machine

_WORKDIR = flags.DEFINE_string("workdir", None, "Trained run directory.")
_TEXT = flags.DEFINE_string(
  "text", "", "Held-out text file (default: the tail of the run's corpus, its validation split)."
)
_PROMPTS = flags.DEFINE_integer("prompts", 8, "Greedy prompts.")
_PROMPT_TOKENS = flags.DEFINE_integer("prompt_tokens", 32, "Tokens per prompt.")
_NEW = flags.DEFINE_integer("new_tokens", 128, "Greedy tokens per prompt.")
_WINDOWS = flags.DEFINE_integer(
  "windows", 32, "Held-out windows (of block_size + 1 tokens) scored."
)
_DTYPE = flags.DEFINE_string(
  "dtype", "bfloat16", "The lower precision compared to float32: bfloat16, float16 or int8."
)
_OUT = flags.DEFINE_string("out", "", "Also write the JSON here.")


def held_out_text(config, val_fraction: float) -> str:
  if _TEXT.value:
    return pathlib.Path(_TEXT.value).read_text()
  from llmjax.data import sources  # pylint: disable=import-outside-toplevel

  text = sources.read_source(config.data).text
  return text[int(len(text) * (1 - val_fraction)) :]


def token_log_probs(model, windows_NxT1):
  """log p(token t+1 | tokens <= t) for every window position: [N, T]."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  @jax.jit
  def score(inputs, targets):
    logp = jax.nn.log_softmax(model(inputs).astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]

  return score(windows_NxT1[:, :-1], windows_NxT1[:, 1:])


def main(argv):
  del argv
  import numpy as np  # pylint: disable=import-outside-toplevel

  from llmjax import api  # pylint: disable=import-outside-toplevel
  from llmjax.cli import common as cli  # pylint: disable=import-outside-toplevel
  from llmjax.inference import generate  # pylint: disable=import-outside-toplevel

  cli.quiet_logs()
  if not _WORKDIR.value:
    raise app.UsageError("--workdir=RUN is required.")
  with cli.user_errors():
    sampler = api.Sampler(_WORKDIR.value)
    low = generate.inference_model(sampler.model, _DTYPE.value)  # bfloat16, or int8.
  config, tok = sampler.config, sampler.tokenizer
  ids = np.asarray(tok.encode(held_out_text(config, config.data.val_fraction)), np.int32)
  block = sampler.model.cfg.block_size
  rng = np.random.default_rng(0)

  # Log-probabilities of held-out windows.
  starts = rng.integers(0, len(ids) - block - 1, _WINDOWS.value)
  windows = np.stack([ids[s : s + block + 1] for s in starts])
  lp32 = np.asarray(token_log_probs(sampler.model, windows))
  lp16 = np.asarray(token_log_probs(low, windows))

  # Greedy agreement.
  n_new = _NEW.value  # Past the context, the Generator continues in segments (both alike).
  gen32, gen16 = sampler.generator, generate.Generator(low, eot_id=tok.eot_id)
  greedy = generate.SamplingParams(temperature=0.0)
  agreements, divergences = [], []
  t0 = time.perf_counter()
  for s in rng.integers(0, len(ids) - _PROMPT_TOKENS.value, _PROMPTS.value):
    prompt = ids[s : s + _PROMPT_TOKENS.value].tolist()
    a = gen32.generate([prompt], n_new, params=greedy)[0]
    b = gen16.generate([prompt], n_new, params=greedy)[0]
    agreements.append(sum(x == y for x, y in zip(a, b)) / n_new)
    divergences.append(next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), n_new))

  result = {
    "workdir": _WORKDIR.value,
    "step": sampler.step,
    "dtype": _DTYPE.value,
    "model": {
      k: getattr(sampler.model.cfg, k)
      for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")
    },
    "held_out_tokens": int(len(ids)),
    "greedy": {
      "prompts": _PROMPTS.value,
      "prompt_tokens": _PROMPT_TOKENS.value,
      "new_tokens": n_new,
      "agreement_mean": round(float(np.mean(agreements)), 4),
      "agreement_each": [round(x, 3) for x in agreements],
      "first_divergence_median": statistics.median(divergences),
      "first_divergence_each": divergences,
      "identical_continuations": sum(d == n_new for d in divergences),
    },
    "log_prob": {
      "windows": _WINDOWS.value,
      "tokens": int(lp32.size),
      "mean_float32": round(float(lp32.mean()), 5),
      f"mean_{_DTYPE.value}": round(float(lp16.mean()), 5),
      "mean_difference": round(float(lp16.mean() - lp32.mean()), 5),
      "mean_abs_token_difference": round(float(np.abs(lp16 - lp32).mean()), 5),
    },
    "seconds": round(time.perf_counter() - t0, 1),
  }
  machine.emit(result, _OUT.value)


if __name__ == "__main__":
  app.run(main)
