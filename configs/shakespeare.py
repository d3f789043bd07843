"""GPT-2 on the bundled Shakespeare corpus (GPT-2 BPE).

  python -m llmjax.main --config=configs/shakespeare.py:cpu --workdir=runs/shakespeare

Variants: default = GPT-2 small shape (124M parameters) for a GPU; `cpu` = a small model
that trains on 2 CPU cores in under 10 minutes; `smoke` = seconds, for tests.
"""

from llmjax.config import schema as config_base
from llmjax.util import errors


def get_config(arg=None):
  c = config_base.base_config()
  c.name = "shakespeare"  # Run name.
  c.model.n_layer = 12  # GPT-2 small depth.
  c.model.n_head = 12  # GPT-2 small heads.
  c.model.n_embd = 768  # GPT-2 small width.
  c.model.block_size = 512  # Context length.
  c.model.dropout = 0.1  # Shakespeare is small: regularise.
  c.train.steps = 5000  # Optimizer steps.
  c.train.batch_size = 32  # Sequences per step.
  c.train.eval_every = 250  # Validation cadence.
  c.train.checkpoint_every = 1000  # Checkpoint cadence.
  c.train.patience = 4  # Early stop after 4 evaluations without improvement.
  c.optim.learning_rate = 3e-4  # Peak learning rate.
  c.optim.warmup_steps = 200  # Warmup.
  c.train.sample_prompt = "ROMEO:"  # Prompt for the end-of-training sample.
  if arg == "cpu":
    c.name = "shakespeare-cpu"
    c.model.n_layer = 4
    c.model.n_head = 4
    c.model.n_embd = 128
    c.model.block_size = 128
    c.model.dropout = 0.0
    c.train.steps = 340
    c.train.batch_size = 16
    c.train.eval_every = 100
    c.train.eval_batches = 10
    c.train.checkpoint_every = 200
    c.train.patience = 0
    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = 50
  elif arg == "smoke":
    c.name = "shakespeare-smoke"
    c.model.n_layer = 2
    c.model.n_head = 2
    c.model.n_embd = 32
    c.model.block_size = 32
    c.model.dropout = 0.0
    c.train.steps = 20
    c.train.batch_size = 4
    c.train.eval_every = 10
    c.train.eval_batches = 2
    c.train.checkpoint_every = 10
    c.train.patience = 0
    c.train.log_every = 1
    c.train.sample_tokens = 16
    c.optim.warmup_steps = 5
  elif arg:
    raise errors.ConfigError(
      f"Unknown variant {arg!r} of configs/shakespeare.py; use cpu or smoke."
    )
  return c
