"""Continuations of the same prompts from two models, side by side (before/after fine-tuning).

  python -m llmjax.compare_samples --before=gpt2-xl --after=runs/book-xl \
      --prompt="It was a bright cold day in April" --prompt="Chapter 1" --max_new_tokens=60

`--before` and `--after` each name a llmjax run directory (its latest or best
checkpoint) or a Hugging Face GPT-2 checkpoint (hub id or local directory). Decoding is
greedy by default, so the table is reproducible; `--temperature` > 0 samples with
`--seed`. The tokenizer is the runs' `data.tokenizer` (`--tokenizer` overrides it).
Prints a Markdown table: one row per prompt; newlines in continuations show as `↵`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import sys
import unicodedata

from absl import app, flags

from llmjax import api
from llmjax.cli import common as cli
from llmjax.data import tokenizer as tokenizer_lib
from llmjax.inference import generate
from llmjax.pretrained import from_hf
from llmjax.runs import checkpoint as ckpt_lib
from llmjax.util import errors

_BEFORE = flags.DEFINE_string(
  "before", None, "Model before fine-tuning: hub id, HF directory or llmjax run directory."
)
_AFTER = flags.DEFINE_string(
  "after", None, "Model after fine-tuning: an llmjax run directory (or any spec --before accepts)."
)
_PROMPTS = flags.DEFINE_multi_string("prompt", [], "Prompt text; repeat for several rows.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 60, "Tokens generated per continuation.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "Sampling temperature (0 = greedy).")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Keep only the k most likely tokens (0 = off).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (with --temperature > 0).")
_TOKENIZER = flags.DEFINE_string(
  "tokenizer",
  "",
  "Tokenizer name (gpt2, char, bpe:FILE); default: the run directories' data.tokenizer, else gpt2.",
)
_WHICH = flags.DEFINE_enum(
  "checkpoint",
  "best",
  ["latest", "best"],
  "Which checkpoint of a run directory: best validation loss or latest.",
)


@dataclasses.dataclass
class LoadedModel:
  model: object
  label: str
  tokenizer: str | None  # The run's data.tokenizer; None for a HF checkpoint.


def is_run_dir(spec: str) -> bool:
  """An llmjax workdir: its config.json has a `model` section (HF ones have model_type)."""
  path = pathlib.Path(spec) / "config.json"
  if not path.is_file():
    return False
  try:
    return "model" in json.loads(path.read_text())
  except json.JSONDecodeError:
    return False


def load(spec: str, which: str = "best") -> LoadedModel:
  """Loads a run directory's checkpoint or a Hugging Face GPT-2 checkpoint."""
  if is_run_dir(spec):
    if which == "best":
      try:
        ckpt_lib.checkpoint_dirs(spec, "best")
      except ckpt_lib.CheckpointError:
        which = "latest"  # Runs without evaluations have no best checkpoint.
    model, config, step = api.load_model(spec, which)
    return LoadedModel(model, f"{spec} ({which} step {step})", config.data.tokenizer)
  model, cfg = from_hf(spec)
  if not hasattr(model, "decode"):
    raise errors.ConfigError(
      f"{spec!r} is a {type(model).__name__}, not a language model; pass a GPT-2 "
      "checkpoint or an llmjax run directory"
    )
  return LoadedModel(model, str(spec), None)


_LINE_BREAKS = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def _cell(text: str) -> str:
  """One table cell: line breaks as ↵, other control characters escaped, pipes quoted."""
  text = _LINE_BREAKS.sub("↵", text).replace("|", "\\|")
  return "".join(
    f"\\x{ord(ch):02x}" if unicodedata.category(ch) == "Cc" and ch != "\t" else ch for ch in text
  )


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
  lines = [
    "| " + " | ".join(_cell(h) for h in headers) + " |",
    "|" + "|".join("---" for _ in headers) + "|",
  ]
  lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def compare(
  before: LoadedModel,
  after: LoadedModel,
  prompts: list[str],
  *,
  tokenizer: str = "",
  max_new_tokens: int = 60,
  temperature: float = 0.0,
  top_k: int = 0,
  seed: int = 0,
) -> str:
  """The Markdown table of continuations of each prompt by both models."""
  names = {m.tokenizer for m in (before, after) if m.tokenizer}
  if not tokenizer and len(names) > 1:
    raise errors.ConfigError(
      f"The runs use different tokenizers {sorted(names)}; pick one with --tokenizer"
    )
  tok = tokenizer_lib.get_tokenizer(tokenizer or (names.pop() if names else "gpt2"))
  params = generate.SamplingParams(temperature=temperature, top_k=top_k)
  columns = []
  for loaded in (before, after):
    vocab = loaded.model.cfg.vocab_size
    if tok.vocab_size > vocab:
      raise errors.ConfigError(
        f"Tokenizer {tok.name!r} has {tok.vocab_size} tokens but {loaded.label} "
        f"has a vocabulary of {vocab}; pass the matching --tokenizer"
      )
    gen = generate.Generator(loaded.model, eot_id=tok.eot_id)
    outs = []
    for prompt in prompts:
      new = gen.generate(
        [tok.encode_prompt(prompt) if prompt else []], max_new_tokens, params=params, seed=seed
      )[0]
      outs.append(tok.decode(new))
    columns.append(outs)
  rows = [[prompt, *cells] for prompt, *cells in zip(prompts, *columns)]
  return markdown_table(["prompt", f"before: {before.label}", f"after: {after.label}"], rows)


def main(argv):
  del argv
  cli.quiet_logs()
  if not _BEFORE.value or not _AFTER.value:
    raise app.UsageError("--before=MODEL and --after=MODEL are both required.")
  prompts = _PROMPTS.value or [""]
  try:
    before, after = load(_BEFORE.value, _WHICH.value), load(_AFTER.value, _WHICH.value)
    table = compare(
      before,
      after,
      prompts,
      tokenizer=_TOKENIZER.value,
      max_new_tokens=_MAX_NEW.value,
      temperature=_TEMPERATURE.value,
      top_k=_TOP_K.value,
      seed=_SEED.value,
    )
  except (FileNotFoundError, ValueError, RuntimeError) as e:
    sys.exit(f"Error: {e}")
  print(table)


def run():
  """Runs the program with the process's command line."""
  app.run(main)


if __name__ == "__main__":
  run()
