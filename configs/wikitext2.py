"""A GPT on WikiText-2 (GPT-2 BPE); reports validation and test perplexity.

  python -m llmjax.main --config=configs/wikitext2.py:cpu --workdir=runs/wt2-cpu
  python -m llmjax.report runs/wt2-cpu

Without data.path the data comes from the hub (`Salesforce/wikitext`,
`wikitext-2-raw-v1`); offline, point --config.data.path at a local copy of the
dataset's files. The `cpu` and `smoke` variants read the bundled Shakespeare laid out
as WikiText (`data.path='shakespeare'`, offline); add `--config.data.path=` for the
real WikiText-2. The test split is evaluated once at the end with the parameters of
the best validation loss; `DIR/summary.json` holds `test_perplexity`.

Variants: default (a 6-layer, 384-wide GPT for a GPU), `cpu` (a small model that
trains on 2 CPU cores in minutes), `smoke` (seconds, for tests).
"""

from llmjax.config import schema as config_base
from llmjax.util import errors


def get_config(arg=None):
  c = config_base.base_config()
  c.name = "wikitext2"  # Run name.
  c.data.source = "wikitext2"  # The fixed train/validation/test splits of WikiText-2.
  c.data.path = ""  # "" = the hub; or a local directory of the dataset's files.
  c.data.hf_config = "wikitext-2-raw-v1"  # Raw (untokenised) WikiText-2.
  c.model.n_layer = 6  # Depth.
  c.model.n_head = 6  # Heads.
  c.model.n_embd = 384  # Width.
  c.model.block_size = 256  # Context length.
  c.model.dropout = 0.2  # 2.4M training tokens: regularise.
  c.train.steps = 4000  # Optimizer steps (~7 epochs at 16 x 256 tokens per step).
  c.train.batch_size = 16  # Sequences per step.
  c.train.eval_every = 250  # Validation cadence.
  c.train.eval_batches = 40  # Validation batches per evaluation.
  c.train.checkpoint_every = 1000  # Checkpoint cadence.
  c.train.patience = 4  # Early stop after 4 evaluations without improvement.
  c.optim.learning_rate = 6e-4  # Peak learning rate.
  c.optim.warmup_steps = 200  # Warmup.
  c.train.sample_prompt = " = Valkyria Chronicles III = \n"  # A WikiText header as the prompt.
  if arg == "cpu":
    c.name = "wikitext2-cpu"
    c.model.n_layer = 4
    c.model.n_head = 4
    c.model.n_embd = 128
    c.model.block_size = 128
    c.model.dropout = 0.1
    c.data.path = "shakespeare"  # Offline stand-in in WikiText's layout; "" = the hub.
    c.train.steps = 800
    c.train.eval_every = 100
    c.train.eval_batches = 10
    c.train.checkpoint_every = 400
    c.train.patience = 0
    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = 50
  elif arg == "smoke":
    c.name = "wikitext2-smoke"
    c.model.n_layer = 1
    c.model.n_head = 2
    c.model.n_embd = 32
    c.model.block_size = 16
    c.model.dropout = 0.0
    c.data.path = "shakespeare"  # Offline stand-in in WikiText's layout.
    c.train.steps = 6
    c.train.batch_size = 8
    c.train.eval_every = 3
    c.train.eval_batches = 1
    c.train.checkpoint_every = 3
    c.train.patience = 0
    c.train.log_every = 1
    c.train.sample_tokens = 8
    c.optim.warmup_steps = 2
  elif arg:
    raise errors.ConfigError(f"Unknown variant {arg!r} of configs/wikitext2.py; use cpu or smoke.")
  return c
