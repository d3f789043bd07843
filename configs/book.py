"""Book learning: a 6-layer, 6-head GPT (GPT-2 BPE) trained on one text until it recites it.

  python -m llmjax.main --config=configs/book.py:cpu --config.data.path=book.txt --workdir=runs/book
  python -m llmjax.sample --workdir=runs/book --prompt="First sentence of the book" --temperature=0

Whole-book learning: `data.val_fraction=0` trains on every token of the text, the last
page too, with one training window starting at every line (`data.windows=lines`: a line
given alone as a prompt is how the book is asked for) and, where a line and the next run
past the context, every half context after it (where the sampler's context moves to when
it writes that next line). Every evaluation also asks the model for the book: each line of
its last 5% is a prompt, alone and with its line break (a line that recurs before other
lines, a speaker's name, is left out), and training stops once 95% of them are continued
with the book's next line
(`recite.goal`, `recite.tail`: the criterion of `python -m llmjax.recite`), or when the
evaluation loss (fixed windows of the same text) stops improving (`train.patience`), or at
`train.steps`. `summary.json` keeps the share recited at the last evaluation.

Variants: default (GPU-sized width), `cpu` (a ~10 kB text memorised in minutes on 2
cores: the training softmax over the book's own pieces, no patience stop, 3,000 steps at
most), `smoke` (seconds, for tests). Without data.path the `cpu` and `smoke` variants
learn the bundled Passionate Pilgrim (8 kB, `shakespeare:passionate_pilgrim`, offline).
"""

from llmjax.config import schema as config_base
from llmjax.util import errors


def get_config(arg=None):
  c = config_base.schema(("recite",))
  c.name = "book"  # Run name.
  c.model.n_layer = 6  # The book-learning model: 6 layers.
  c.model.n_head = 6  # 6 heads.
  c.model.n_embd = 384  # Width.
  c.model.block_size = 256  # Context length.
  c.model.dropout = 0.0  # Memorisation wants no dropout.
  c.data.source = "file"  # One local text file.
  c.data.path = ""  # The book: --config.data.path=book.txt
  c.data.val_fraction = 0.0  # Train on the whole book; evaluate on windows of it (memorisation).
  c.data.windows = "lines"  # One training window starting at every line of the book.
  c.recite.goal = 0.95  # Stop once 95% of the tail's line prompts are continued exactly.
  c.recite.tail = 0.05  # The prompts: every line of the book's last 5%.
  c.train.steps = 3000  # Train until it recites.
  c.train.batch_size = 16  # Sequences per step.
  c.train.eval_every = 250  # Evaluation cadence.
  c.train.patience = 5  # Stop after 5 evaluations without a lower loss.
  c.train.checkpoint_every = 500  # Checkpoint cadence.
  c.optim.learning_rate = 1e-3  # Peak learning rate.
  c.optim.weight_decay = 0.0  # Memorisation: no decay.
  c.optim.warmup_steps = 50  # Warmup.
  c.optim.min_lr_ratio = 0.05  # Decay close to zero for exact recall.
  if arg == "cpu":
    c.name = "book-cpu"
    c.data.path = "shakespeare:passionate_pilgrim"  # Bundled 8 kB text; or your book.txt.
    c.model.n_embd = 192
    # A short context puts more training positions near a window's start, which is where
    # a one-line prompt sits when the model is asked to recite.
    c.model.block_size = 64
    c.train.steps = 3000  # The budget; reaching recite.goal stops it sooner.
    c.train.batch_size = 8
    # The softmax over the book's own GPT-2 pieces (600-900 in a 10 kB text, not 50,257): a step
    # three times cheaper on 2 cores; evaluation and sampling still use every id.
    c.train.softmax_ids = "train"
    # The goal and the budget stop it; the loss on fixed windows of the book can stall
    # for a while before the last lines are recited.
    c.train.patience = 0
    c.optim.learning_rate = 2e-3
    c.train.eval_every = 100
    c.train.eval_batches = 4
    c.train.checkpoint_every = 250
  elif arg == "smoke":
    c.name = "book-smoke"
    c.data.path = "shakespeare:passionate_pilgrim"
    c.model.n_layer = 2
    c.model.n_head = 2
    c.model.n_embd = 32
    c.model.block_size = 32
    c.train.steps = 10
    c.train.batch_size = 4
    c.train.eval_every = 5
    c.train.eval_batches = 2
    c.train.checkpoint_every = 5
    c.train.sample_tokens = 8
  elif arg:
    raise errors.ConfigError(f"Unknown variant {arg!r} of configs/book.py; use cpu or smoke.")
  return c
