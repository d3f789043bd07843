"""Restore a trained run's parameters and print continuations of a prompt.

  python -m llmjax.sample --workdir=runs/shakespeare --prompt="ROMEO:" --max_new_tokens=200 \
      --temperature=0.8 --top_k=200 --num_samples=2
  python -m llmjax.sample --workdir=runs/shakespeare --prompt="ROMEO:" --dtype=bfloat16

`--dtype=bfloat16` casts the restored parameters and runs the matmuls and the KV cache in
bfloat16 (`llmjax.inference.generate.cast_model`): half the memory traffic per token; docs/
performance.md states what it costs in agreement with float32 (`Sampler(..., dtype=...)`
in Python). `--dtype=int8` quantizes a GPT's matrices to int8 with one scale per output
channel and decodes with int8 x int8 dots (`llmjax.inference.quantize`): on CPU the fastest
batch-1 decoding, at the agreement docs/performance.md states.

  python -m llmjax.sample --init_from=online --model=gpt2 --prompt="Today I decided to"
"""

import sys
import time

from absl import app, flags

from llmjax import api
from llmjax.cli import common as cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by llmjax.main.")
_INIT_FROM = flags.DEFINE_enum(
  "init_from",
  "resume",
  ["resume", "online"],
  "resume: a trained --workdir; online: a pretrained --model.",
)
_MODEL = flags.DEFINE_string(
  "model",
  None,
  "With --init_from=online: gpt2, gpt2-medium, "
  "gpt2-large, gpt2-xl (downloaded once, cached) or a local "
  "Hugging Face GPT-2 directory.",
)
_PROMPT = flags.DEFINE_string("prompt", "", "Prompt text (empty = start from <|endoftext|>).")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 200, "Tokens to generate per sample.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "Sampling temperature (0 = greedy).")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Keep only the k most likely tokens (0 = off).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass (1 = off).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_NUM = flags.DEFINE_integer("num_samples", 1, "Independent samples to draw.")
_DTYPE = flags.DEFINE_enum(
  "dtype",
  "float32",
  ["float32", "bfloat16", "float16", "int8"],
  "Inference dtype the restored parameters are cast to (int8: quantized weights and "
  "activations, `llmjax.inference.quantize`).",
)
_WHICH = flags.DEFINE_enum(
  "checkpoint",
  "latest",
  ["latest", "best"],
  "Which checkpoint to load: the latest or the best validation loss.",
)


def main(argv):
  del argv
  cli.quiet_logs()
  online = _INIT_FROM.value == "online"
  if online and not _MODEL.value:
    raise app.UsageError(
      "--init_from=online needs --model=gpt2 (or another GPT-2 name or directory)."
    )
  if not online and not _WORKDIR.value:
    raise app.UsageError("--workdir=DIR is required (or --init_from=online --model=gpt2).")
  with cli.user_errors():
    if online:
      sampler = api.Sampler(
        out_dir=_MODEL.value, init_from="online", seed=_SEED.value, dtype=_DTYPE.value
      )
    else:
      sampler = api.Sampler(
        _WORKDIR.value, seed=_SEED.value, which=_WHICH.value, dtype=_DTYPE.value
      )
    start = time.perf_counter()
    texts = sampler.generate_text(
      _PROMPT.value,
      _MAX_NEW.value,
      temperature=_TEMPERATURE.value,
      top_k=_TOP_K.value,
      top_p=_TOP_P.value,
      num_samples=_NUM.value,
      include_prompt=True,
    )
  elapsed = time.perf_counter() - start
  texts = [texts] if isinstance(texts, str) else texts
  source = _MODEL.value if online else f"step {sampler.step}"
  for i, text in enumerate(texts):
    print(f"--- sample {i} ({source}) ---")
    print(text)
  total = _MAX_NEW.value * len(texts)
  print(
    f"--- {total} tokens in {elapsed:.2f}s ({total / max(elapsed, 1e-9):,.0f} tokens/s, "
    "compilation included) ---",
    file=sys.stderr,
  )


def run():
  """Runs the program with the process's command line."""
  app.run(main)


if __name__ == "__main__":
  run()
