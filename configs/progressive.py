"""Progressive diverging GPT on math text: 3 stages of shared blocks, then LoRA copies.

  python -m llmjax.main --config=configs/progressive.py:cpu --workdir=runs/progressive

Stage 1 trains 3 blocks each applied 4 times, stage 2 six copies (attention through LoRA),
stage 3 twelve copies (attention through LoRA), each stage on a third of the tokens.
Variants: default = GPT-2 small shape for a GPU, on the hub's math datasets; `cpu` = a
small model for 2 CPU cores; `smoke` = seconds, for tests; both on generated exercises
(offline; `--config.data.path=` for the hub datasets). See docs/architectures.md.
"""

import ml_collections

from llmjax.config import schema as config_base
from llmjax.util import errors


def math_data(c: ml_collections.ConfigDict, max_tokens: int, path: str = "") -> None:
  c.data.source = "math"  # Maths-College and open-web-math, streamed, an equal share of data.max_tokens each (data.path, data.mix override).
  c.data.path = path  # "" = math_text.DEFAULT_DATASETS; "generated" (offline); ids or files.
  c.data.max_tokens = max_tokens  # Tokens streamed into the token cache (val first, then train).
  c.data.val_fraction = 0.02  # Share of max_tokens held out as the test split.


def get_config(arg=None):
  c = config_base.schema(("progressive",), arch="progressive")  # llmjax.models.progressive.
  c.name = "progressive"  # Run name.
  c.job = "progressive"  # Staged training (llmjax.train.progressive_task).
  c.model.n_layer = 12  # Layers of the final model (stage 3 has this many blocks).
  c.model.stage_groups = (3, 6, 12)  # Blocks per stage: 3 shared, then 6 and 12 LoRA copies.
  c.model.n_head = 12  # GPT-2 small heads.
  c.model.n_embd = 768  # GPT-2 small width.
  c.model.block_size = 512  # Context length.
  math_data(c, 200_000_000)
  c.train.steps = 12000  # Optimizer steps over all three stages.
  c.train.batch_size = 32  # Sequences per step.
  c.train.eval_every = 500  # Validation cadence.
  c.train.eval_batches = 40  # Test batches per evaluation.
  c.train.checkpoint_every = 1000  # Checkpoint cadence.
  c.optim.learning_rate = 6e-4  # Peak learning rate.
  c.optim.warmup_steps = 300  # Warmup.
  c.train.sample_prompt = "Theorem."  # Prompt for the end-of-training sample.
  if arg == "cpu":
    c.name = "progressive-cpu"
    c.model.n_head = 4
    c.model.n_embd = 128
    c.model.block_size = 256
    math_data(c, 2_000_000, "generated")
    c.train.steps = 300
    c.train.batch_size = 8
    c.train.eval_every = 50
    c.train.eval_batches = 8
    c.train.checkpoint_every = 100
    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = 30
    c.train.sample_tokens = 0
  elif arg == "smoke":
    c.name = "progressive-smoke"
    c.model.n_head = 2
    c.model.n_embd = 32
    c.model.n_layer = 4  # Quick to compile: stages of 1, 2 and 4 blocks.
    c.model.stage_groups = (1, 2, 4)
    c.model.block_size = 64
    math_data(c, 40_000, "generated")
    c.train.steps = 9
    c.train.batch_size = 8
    c.train.eval_every = 3
    c.train.eval_batches = 2
    c.train.checkpoint_every = 3
    c.train.log_every = 1
    c.train.sample_tokens = 8
    c.optim.warmup_steps = 2
    c.model.lora_rank = 4
  elif arg:
    raise errors.ConfigError(
      f"Unknown variant {arg!r} of configs/progressive.py; use cpu or smoke."
    )
  return c
