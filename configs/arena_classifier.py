"""Chat-arena preference classifier: a pretrained encoder reads (prompt, answer A) and
(prompt, answer B); an MLP head predicts A wins / B wins / tie.

  python -m llmjax.main --config=configs/arena_classifier.py:minilm,frozen --workdir=runs/arena
  python -m llmjax.main --config=configs/arena_classifier.py:deberta-v3,bottom_frozen \
      --config.arena.source=csv --config.arena.path=train.csv --workdir=runs/arena-deberta
  python -m llmjax.main --config=configs/arena_classifier.py:smoke --workdir=/tmp/arena-smoke
  python -m llmjax.main --config=configs/arena_classifier.py:set1 --workdir=runs/arena-set1
  python -m llmjax.main --config=configs/arena_classifier.py:set3,smoke --workdir=/tmp/set3
  python -m llmjax.main --config=configs/arena_classifier.py:run1 --workdir=runs/arena-run1

The variant is a comma-separated list: one encoder (minilm, distilbert, bert, bert-large,
roberta, electra, albert, deberta, deberta-v3; default minilm), optionally one freezing
mode (frozen, bottom_frozen, full, random; default full), `original` (the original
study's head, length and optimiser, below), `run1` (the original's first run: the
response alone, no prompt, up to 512 tokens, on DistilBERT unless another encoder is
named; the original reported chance accuracy, about 33%), or `smoke` (a tiny encoder trained from
scratch on a generated set where the longer answer wins; seconds on a CPU).

`set1`, `set2`, `set3` are the original study's experiment sets (llmjax.experiments.
arena_sets): several runs listed in `arena.runs`, all with the original's settings:
first-token outputs of A and B concatenated (pooling=cls, diff_prod=False), 128 tokens
per side, 80/10/10 split, batch 32, 3 epochs, AdamW at a constant lr 1e-5, no A/B
swapping. `setN,smoke` runs the same modes offline on tiny random checkpoints of each
family (tests/goldens) and generated rows.

Rows sharing a prompt never fall in two splits; the checkpoint is chosen on validation
and the reported figures are test figures. Encoders with absolute positions read at most
512 tokens, so their responses are cut to 380 tokens (128 + 380 + special tokens <= 512);
DeBERTa (relative positions) reads the full 128 + 512. `model.*` and `data.*` are not
used by this job.
"""

from llmjax.config import schema as config_base
from llmjax.experiments import arena_sets
from llmjax.util import errors

ENCODERS = arena_sets.ENCODERS
FREEZE_MODES = ("frozen", "bottom_frozen", "full", "random")
FLAGS = ("smoke", "original", "run1")


def _original(c, encoder, set_name=None, smoke=False):
  """The original study's settings (and, for a set, its runs)."""
  c.classifier.pooling = "cls"
  c.classifier.diff_prod = False
  c.classifier.swap_augment = False
  c.classifier.both_orders = False
  c.arena.max_length = 128
  c.arena.prompt_max_tokens = 128  # The prompt comes first and may take the whole side.
  c.arena.response_max_tokens = 128
  c.arena.val_fraction = 0.1
  c.arena.test_fraction = 0.1
  c.arena.epochs = 3
  c.train.batch_size = 32
  c.train.patience = 0
  c.optim.learning_rate = 1e-5
  c.optim.min_lr_ratio = 1.0  # Constant: the original used no schedule.
  c.optim.warmup_steps = 0
  c.optim.grad_clip = 0.0
  c.optim.beta2 = 0.999  # torch.optim.AdamW defaults.
  c.optim.weight_decay = 0.01
  if set_name:
    c.name = f"arena-{set_name}"
    c.arena.runs = arena_sets.runs_spec(set_name, smoke=smoke)
    first = arena_sets.parse_runs(c.arena.runs)[0]
    c.classifier.init_from, c.classifier.freeze = first.checkpoint, first.mode
  if smoke:
    c.name += "-smoke"
    c.classifier.tokenizer = "synthetic"
    if not set_name and encoder in arena_sets.SMOKE_CHECKPOINTS:
      c.classifier.init_from = str(arena_sets.GOLDENS / arena_sets.SMOKE_CHECKPOINTS[encoder])
    c.classifier.dropout = 0.0
    c.classifier.frozen_layers = 1  # The tiny checkpoints have 2 layers.
    c.arena.source = "synthetic"
    c.arena.path = ""
    c.arena.synthetic_rows = 1200
    c.arena.synthetic_prompts = 300  # Each prompt in about 4 rows: the grouping matters.
    c.arena.synthetic_max_words = 8
    c.arena.prompt_max_tokens = 2
    c.arena.max_length = 14  # The tiny RoBERTa checkpoint has 14 usable positions.
    c.arena.epochs = 4
    c.optim.learning_rate = 1e-3
    c.train.checkpoint_every = 0


def get_config(arg=None):
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  known = (*ENCODERS, *FREEZE_MODES, *FLAGS, *arena_sets.SETS)
  unknown = [p for p in parts if p not in known]
  if unknown:
    raise errors.ConfigError(
      f"Unknown variant part(s) {unknown} of configs/arena_classifier.py; use "
      f"an encoder ({', '.join(ENCODERS)}), a freezing mode "
      f"({', '.join(FREEZE_MODES)}), a set ({', '.join(arena_sets.SETS)}), "
      "original, run1 or smoke."
    )
  set_name = next((p for p in parts if p in arena_sets.SETS), None)
  if set_name and any(p in ENCODERS or p in FREEZE_MODES for p in parts):
    raise errors.ConfigError(
      f"Variant {arg!r}: {set_name} fixes its own encoders and freezing modes; "
      f"drop {[p for p in parts if p in ENCODERS or p in FREEZE_MODES]}."
    )
  run1 = "run1" in parts
  if run1 and set_name:
    raise errors.ConfigError(f"Variant {arg!r}: run1 is one run, not part of {set_name}.")
  encoder = next((p for p in parts if p in ENCODERS), "distilbert" if run1 else "minilm")
  freeze = next((p for p in parts if p in FREEZE_MODES), "full")
  checkpoint, response_tokens = ENCODERS[encoder]

  c = config_base.schema(("classifier", "arena"))
  c.name = f"arena-{encoder}-{freeze}"  # Run name.
  c.job = "classify"  # Runs llmjax.train.classify.
  c.classifier.init_from = checkpoint  # Encoder checkpoint of the chosen variant.
  c.classifier.freeze = freeze  # Freezing mode of the chosen variant.
  c.arena.response_max_tokens = response_tokens  # Response tokens kept per side.

  c.train.steps = 3000  # Optimizer steps (unless arena.epochs is set).
  c.train.batch_size = 32  # Pairs per step.
  c.train.eval_every = 250  # Validation cadence (with arena.epochs: every epoch).
  c.train.eval_batches = 0  # Validation batches per evaluation (0 = the whole split).
  c.train.checkpoint_every = 500  # Checkpoint cadence.
  c.train.patience = 4  # Early stop after 4 evaluations without a better log loss.
  c.train.log_every = 10  # Train metrics cadence.
  c.train.sample_tokens = 0  # (Unused by this job.)
  c.optim.learning_rate = 2e-5  # Peak learning rate (encoder and head).
  c.optim.warmup_steps = 200  # Warmup.
  c.optim.weight_decay = 0.01  # Decoupled decay on matrices.
  c.optim.beta2 = 0.999  # AdamW second moment, BERT-style.
  if freeze == "frozen":
    c.optim.learning_rate = 1e-3  # Only the head trains: a larger step is safe.
  if set_name or "original" in parts or run1:
    _original(c, encoder, set_name, smoke="smoke" in parts)
    if run1:
      c.name = f"arena-run1-{encoder}" + ("-smoke" if "smoke" in parts else "")
      c.arena.prompt_max_tokens = 0  # Run 1 read the responses alone.
      if "smoke" not in parts:
        c.arena.max_length = 512  # distilbert-base-uncased's full length.
        c.arena.response_max_tokens = 510  # 512 minus [CLS] and [SEP].
  elif "smoke" in parts:
    c.name = "arena-smoke"
    c.classifier.init_from = "scratch"
    c.classifier.tokenizer = "minilm"
    c.classifier.hidden_size = 32
    c.classifier.num_layers = 2
    c.classifier.num_heads = 2
    c.classifier.intermediate_size = 64
    c.classifier.max_position_embeddings = 64
    c.classifier.dropout = 0.0
    c.classifier.head_hidden = 64
    c.classifier.head_dropout = 0.0
    c.arena.source = "synthetic"
    c.arena.path = ""
    c.arena.synthetic_rows = 800
    c.arena.val_fraction = 0.2
    c.arena.test_fraction = 0.2
    c.arena.prompt_max_tokens = 8
    c.arena.response_max_tokens = 24
    c.train.steps = 300
    c.train.batch_size = 32
    c.train.eval_every = 100
    c.train.checkpoint_every = 100
    c.train.patience = 0
    c.optim.learning_rate = 3e-3
    c.optim.warmup_steps = 20
  return c
