"""GPT-2 baseline vs convolution-attention vs progressive diverging model on math text.

  python -m llmjax.main --config=configs/arch_compare.py:cpu --workdir=runs/arch

Trains the models of `compare.models` one after the other with the same data, micro-batch
and steps, then writes results.md, results.json and loss_curves.png in the workdir
(llmjax.experiments.arch_compare). The `model` section is the progressive model's (its
keys are gpt's plus the stages and adapters); each row's run takes the keys its arch
declares from it and the rest from the arch's defaults. A row of `compare.models` may
override its model's width, heads, context, compression or objective:
`conv_attention(n_embd=48 block_size=1024 fan_in=4 target_offset=64)`.

Variants:
  (none) or `original`: the original study's table: GPT-2 baseline and progressive with 6
      heads, width 192, context 256; convolution-attention with 6 heads, base width 48
      (doubling per compression up to 384), context 1024, trained and scored on the token
      64 ahead as it was, and again on the next token so its loss compares with the
      baseline's; micro-batch 8; 80k batches (a GPU). One difference stays: each
      evaluation averages 200 test batches (1,600 windows of 256 tokens spread evenly over
      the 20M-token test split) where the original averaged 25k batches once, at the end;
      `--config.train.eval_batches=25000` gives that count, at every evaluation.
  `matched`: the three within 10% of each other in parameters, context 256, next token.
  `cpu`: the original's models and rows, 40 batches each (sized for under 30 minutes on
      2 idle CPU cores).
  `smoke`: seconds, for tests.
The small variants train on generated exercises (offline; `--config.data.path=` for the hub).
"""

from llmjax.config import schema as config_base
from llmjax.util import errors

ORIGINAL_MODELS = (
  "gpt, conv_attention(n_embd=48 block_size=1024 target_offset=64), "
  "conv_attention(n_embd=48 block_size=1024), progressive"
)


def get_config(arg=None):
  c = config_base.schema(("compare", "progressive"), arch="progressive")
  c.name = "arch"  # Prefix of the run names.
  c.job = "arch_compare"  # llmjax.experiments.arch_compare.
  c.compare.models = ORIGINAL_MODELS  # The original study's rows (see the docstring).
  c.model.n_layer = 12  # GPT and progressive depth (conv_attention has 12 blocks by layout).
  c.model.n_head = 6  # Heads in every attention block.
  c.model.n_embd = 192  # Width D (conv_attention widens to 2D, 4D, 8D when compressing).
  c.model.block_size = 256  # Context window (conv_attention: a multiple of fan_in**3 = 64).
  c.data.source = "math"  # Maths-College and open-web-math, streamed, an equal share of data.max_tokens each (data.mix).
  c.data.path = ""  # "" = both default datasets; comma-separated ids or local data files.
  c.data.max_tokens = 1_000_000_000  # Tokens streamed into the token cache.
  c.data.val_fraction = 0.02  # Share of max_tokens held out as the test split.
  c.train.steps = 80_000  # Training batches per model.
  c.train.batch_size = 8  # Micro-batch (grad_accum = 1).
  c.train.eval_every = 5000  # Test-loss cadence.
  c.train.eval_batches = 200  # Test batches per evaluation.
  c.train.checkpoint_every = 5000  # Checkpoint cadence.
  c.train.sample_tokens = 0  # No samples: inference is timed separately.
  c.optim.learning_rate = 6e-4  # Peak learning rate.
  c.optim.warmup_steps = 1000  # Warmup.
  if arg in (None, "", "original"):
    pass
  elif arg == "matched":
    c.name = "arch-matched"
    c.compare.models = "gpt, conv_attention(n_embd=66), progressive"
  elif arg == "cpu":
    c.name = "arch-cpu"
    c.data.path = "generated"  # Generated exercises (offline); "" = the hub datasets.
    c.data.max_tokens = 1_000_000
    c.train.steps = 40
    c.train.eval_every = 20
    c.train.eval_batches = 4
    c.train.checkpoint_every = 40
    c.train.log_every = 4
    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = 8
    c.compare.inference_tokens = 32
  elif arg == "smoke":
    c.name = "arch-smoke"
    c.compare.models = "gpt, conv_attention(n_embd=8 block_size=64 fan_in=2 target_offset=8)"
    c.model.n_layer = 4
    c.model.n_head = 2
    c.model.n_embd = 16
    c.model.block_size = 32
    c.model.stage_groups = (1, 2, 4)
    c.data.path = "generated"  # Generated exercises (offline).
    c.data.max_tokens = 20_000
    c.data.val_fraction = 0.1
    c.train.steps = 6
    c.train.eval_every = 3
    c.train.eval_batches = 2
    c.train.checkpoint_every = 6
    c.train.log_every = 1
    c.optim.warmup_steps = 1
    c.compare.inference_tokens = 4
    c.model.lora_rank = 2
  else:
    raise errors.ConfigError(
      f"Unknown variant {arg!r} of configs/arch_compare.py; use original, matched, cpu or smoke."
    )
  return c
