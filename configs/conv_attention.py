"""Convolution-attention compressor/expander language model on math text.

  python -m llmjax.main --config=configs/conv_attention.py:cpu --workdir=runs/conv

Three compressions (length / fan_in, width x 2) then three expansions, attention and
feed-forward blocks around each; exactly causal (see docs/architectures.md).
Variants: default = GPU size, on the hub's math datasets; `cpu` = a small model for 2 CPU
cores and `smoke` = seconds, both on generated exercises (offline; `--config.data.path=`
for the hub datasets).
"""

from llmjax.config import schema as config_base
from llmjax.util import errors


def get_config(arg=None):
  c = config_base.base_config("conv_attention")  # llmjax.models.conv_attention.
  c.name = "conv_attention"  # Run name.
  c.model.n_head = 12  # Heads in every block (head size grows with the width).
  c.model.n_embd = 768  # Width D at full length (2D, 4D, 8D after each compression).
  c.model.block_size = 512  # Context; a multiple of fan_in**3.
  c.model.fan_in = 4  # Positions merged per compression.
  c.model.target_offset = 1  # 1 = next token; fan_in**3 = 64 is the original objective.
  c.data.source = "math"  # Maths-College and open-web-math, streamed, an equal share of data.max_tokens each (data.mix).
  c.data.path = ""  # "" = both default datasets; comma-separated ids or local data files.
  c.data.max_tokens = 200_000_000  # Tokens streamed into the token cache.
  c.data.val_fraction = 0.02  # Share of max_tokens held out as the test split.
  c.train.steps = 12000  # Optimizer steps.
  c.train.batch_size = 32  # Sequences per step.
  c.train.eval_every = 500  # Validation cadence.
  c.train.eval_batches = 40  # Test batches per evaluation.
  c.train.checkpoint_every = 1000  # Checkpoint cadence.
  c.optim.learning_rate = 6e-4  # Peak learning rate.
  c.optim.warmup_steps = 300  # Warmup.
  c.train.sample_prompt = "Theorem."  # Prompt for the end-of-training sample.
  if arg == "cpu":
    c.name = "conv_attention-cpu"
    c.model.n_head = 4
    c.model.n_embd = 128
    c.model.block_size = 256
    c.data.path = "generated"  # Generated exercises (offline); "" = the hub datasets.
    c.data.max_tokens = 2_000_000
    c.train.steps = 300
    c.train.batch_size = 8
    c.train.eval_every = 50
    c.train.eval_batches = 8
    c.train.checkpoint_every = 100
    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = 30
    c.train.sample_tokens = 0
  elif arg == "smoke":
    c.name = "conv_attention-smoke"
    c.model.n_head = 2
    c.model.n_embd = 16
    c.model.block_size = 64
    c.data.path = "generated"  # Generated exercises (offline).
    c.data.max_tokens = 40_000
    c.train.steps = 6
    c.train.batch_size = 8
    c.train.eval_every = 3
    c.train.eval_batches = 2
    c.train.checkpoint_every = 3
    c.train.log_every = 1
    c.train.sample_tokens = 8
    c.optim.warmup_steps = 2
  elif arg:
    raise errors.ConfigError(
      f"Unknown variant {arg!r} of configs/conv_attention.py; use cpu or smoke."
    )
  return c
