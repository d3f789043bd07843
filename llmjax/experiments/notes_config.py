"""The shared base of the notes-corpus configs (`configs/*_notes.py`).

`notes_config(variant, size)` gives one run of experiment 1: a GPT trained on
the `variant` corpus (pre, post, blank or none; see `llmjax.data.notes`). The
four variants differ only in `notes.variant` (and the name): same model, same
optimiser, same data text, so the experiment compares like with like. Sizes:

  default  ~96M parameters (8 layers, width 768, GPT-2 BPE) on Shakespeare:
           a GPU run.
  large    GPT-2 small shape on HuggingFaceFW/fineweb (sample-10BT), streamed
           into a notes corpus of `notes.limit_chars` characters: a GPU run
           (needs the network).
  cpu      4 layers, width 128, byte tokens, the first 2 MB of Shakespeare: a
           few minutes on 2 CPU cores. Bytes instead of GPT-2 BPE keep the
           output layer small (a 50k-way softmax would dominate the compute).
  cpu_bpe  the `cpu` model with GPT-2 BPE pieces (the original's tokens) and a
           context of 128 tokens: the 50k-way output layer dominates its step.
  smoke    a tiny model on 20 kB of text: seconds, for tests.
"""

from __future__ import annotations

import ml_collections

from llmjax.config import schema as config_base
from llmjax.util import errors

VARIANTS = ("pre", "post", "blank", "none")
SIZES = ("default", "large", "cpu", "cpu_bpe", "smoke")
GPT2_VOCAB = 50257
BYTE_VOCAB = 257
ENGLISH_TAGS = 50  # Fine tags of the default English pipeline (the note vocabulary).


def notes_config(variant: str, size: str | None = None) -> ml_collections.ConfigDict:
  """The config of one notes run: `variant` corpus at `size` (None = default)."""
  if variant not in VARIANTS:
    raise errors.ConfigError(
      f"Unknown notes variant {variant!r}; use one of {', '.join(VARIANTS)}."
    )
  size = size or "default"
  if size not in SIZES:
    raise errors.ConfigError(
      f"Unknown variant {size!r} of the notes configs; use one of "
      f"{', '.join(s for s in SIZES if s != 'default')} (or none for the "
      "default)."
    )
  c = config_base.base_config()
  c.name = f"{variant}-notes"
  c.notes.variant = variant
  c.notes.scheme = "tag"
  # Every variant gets the same vocabulary, so the four models are identical in shape.
  c.model.vocab_size = GPT2_VOCAB + ENGLISH_TAGS
  c.model.n_layer = 8
  c.model.n_head = 12
  c.model.n_embd = 768
  c.model.block_size = 512
  c.model.dropout = 0.1
  c.train.steps = 5000
  c.train.batch_size = 32
  c.train.eval_every = 250
  c.train.checkpoint_every = 1000
  c.optim.learning_rate = 3e-4
  c.optim.warmup_steps = 200
  c.train.sample_prompt = ""
  if size == "large":
    c.name = f"{variant}-notes-large"
    c.data.source = "hf"
    c.data.path = "HuggingFaceFW/fineweb"
    c.data.hf_config = "sample-10BT"
    c.data.hf_split = "train"
    c.data.hf_streaming = True
    c.data.val_fraction = 0.01
    c.notes.limit_chars = 1_000_000_000
    c.notes.n_process = 16
    c.notes.batch_size = 64
    c.model.n_layer = 12
    c.model.block_size = 1024
    c.model.dropout = 0.0
    c.model.dtype = "bfloat16"
    c.train.batch_size = 64
    c.train.steps = 20000
    c.train.eval_every = 1000
    c.train.checkpoint_every = 2000
    c.optim.learning_rate = 6e-4
    c.optim.warmup_steps = 1000
  elif size in ("cpu", "cpu_bpe"):
    c.name = f"{variant}-notes-{size.replace('_', '-')}"
    c.data.tokenizer = "char" if size == "cpu" else "gpt2"
    c.notes.limit_chars = 2_000_000
    c.model.vocab_size = (BYTE_VOCAB if size == "cpu" else GPT2_VOCAB) + ENGLISH_TAGS
    c.model.n_layer = 4
    c.model.n_head = 4
    c.model.n_embd = 128
    c.model.block_size = 256
    c.model.dropout = 0.0
    c.train.steps = 300
    c.train.batch_size = 16
    c.train.eval_every = 100
    c.train.eval_batches = 8
    c.train.checkpoint_every = 100
    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = 30
    if size == "cpu_bpe":
      c.model.block_size = 128
  elif size == "smoke":
    c.name = f"{variant}-notes-smoke"
    c.data.tokenizer = "char"
    c.notes.limit_chars = 20_000
    c.model.vocab_size = BYTE_VOCAB + ENGLISH_TAGS
    c.model.n_layer = 2
    c.model.n_head = 2
    c.model.n_embd = 32
    c.model.block_size = 64
    c.model.dropout = 0.0
    c.train.steps = 8
    c.train.batch_size = 8
    c.train.eval_every = 4
    c.train.eval_batches = 2
    c.train.checkpoint_every = 4
    c.train.log_every = 1
    c.train.sample_tokens = 16
    c.optim.learning_rate = 3e-3
    c.optim.warmup_steps = 2
  return c
