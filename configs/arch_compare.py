"""GPT-2 baseline vs convolution-attention vs progressive diverging model on math text.

  python -m llmjax.main --config=configs/arch_compare.py:cpu --workdir=runs/arch

Trains the three models one after the other with the same data, micro-batch, context
window and width, then writes results.md, results.json and loss_curves.png in the workdir
(llmjax.experiments.arch_compare). Variants: default = GPT-2 small width on a GPU;
`cpu` = about 30 minutes for all three on 2 CPU cores; `smoke` = seconds, for tests.
"""

from llmjax import config_base


def get_config(arg=None):
  c = config_base.schema(("compare", "progressive", "lora"))
  c.name = "arch"  # Prefix of the three run names.
  c.job = "arch_compare"  # llmjax.experiments.arch_compare.
  c.model.n_layer = 12  # GPT and progressive depth (conv_attention has 12 blocks by layout).
  c.model.n_head = 12  # Heads in every attention block.
  c.model.n_embd = 768  # Width D (conv_attention widens to 2D, 4D, 8D when compressing).
  c.model.block_size = 512  # Context window; a multiple of fan_in**3 = 64.
  c.model.fan_in = 4  # conv_attention compression factor.
  c.model.target_offset = 1  # Next-token objective for all three (comparable losses).
  c.data.source = "math"  # Maths-College then open-web-math, streamed.
  c.data.path = ""  # "" = both default datasets; comma-separated ids or local data files.
  c.data.max_tokens = 200_000_000  # Tokens streamed into the token cache.
  c.data.val_fraction = 0.02  # Share of max_tokens held out as the test split.
  c.train.steps = 12000  # Training batches per model.
  c.train.batch_size = 32  # Micro-batch (grad_accum = 1).
  c.train.eval_every = 500  # Test-loss cadence.
  c.train.eval_batches = 40  # Test batches per evaluation.
  c.train.checkpoint_every = 1000  # Checkpoint cadence.
  c.train.sample_tokens = 0  # No samples: inference is timed separately.
  c.optim.learning_rate = 6e-4  # Peak learning rate.
  c.optim.warmup_steps = 300  # Warmup.
  if arg == "cpu":
    c.name = "arch-cpu"
    c.model.n_head = 4
    c.model.n_embd = 128
    c.model.block_size = 128
    c.data.max_tokens = 1_000_000
    c.train.steps = 240
    c.train.batch_size = 8
    c.train.eval_every = 40
    c.train.eval_batches = 8
    c.train.checkpoint_every = 120
    c.train.log_every = 5
    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = 24
    c.compare.inference_tokens = 32
  elif arg == "smoke":
    c.name = "arch-smoke"
    c.model.n_layer = 4
    c.model.n_head = 2
    c.model.n_embd = 16
    c.model.block_size = 64
    c.model.fan_in = 2
    c.progressive.stage_groups = (1, 2, 4)
    c.data.max_tokens = 20_000
    c.data.val_fraction = 0.1
    c.train.steps = 6
    c.train.batch_size = 8
    c.train.eval_every = 3
    c.train.eval_batches = 2
    c.train.checkpoint_every = 6
    c.train.log_every = 1
    c.optim.warmup_steps = 1
    c.compare.inference_tokens = 4
    c.lora.rank = 2
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of configs/arch_compare.py; use cpu or smoke.")
  return c
