"""Chat-arena preference classifier: a pretrained encoder reads (prompt, answer A) and
(prompt, answer B); an MLP head predicts A wins / B wins / tie.

  python -m llmjax.main --config=configs/arena_classifier.py:minilm,frozen --workdir=runs/arena
  python -m llmjax.main --config=configs/arena_classifier.py:deberta-v3,bottom_frozen \
      --config.arena.source=csv --config.arena.path=train.csv --workdir=runs/arena-deberta
  python -m llmjax.main --config=configs/arena_classifier.py:smoke --workdir=/tmp/arena-smoke

The variant is a comma-separated list: one encoder (minilm, bert, distilbert, roberta,
electra, albert, deberta-v3; default minilm), optionally one freezing mode (frozen,
bottom_frozen, full; default full), or `smoke` (a tiny encoder trained from scratch on
a generated set where the longer answer wins; seconds on a CPU).

Encoders with absolute positions read at most 512 tokens, so their responses are cut
to 380 tokens (128 + 380 + special tokens <= 512); DeBERTa-v3 (relative positions)
reads the full 128 + 512. `model.*` and `data.*` are not used by this job.
"""


from llmjax import config_base

# name -> (checkpoint: hub id or "minilm" for the offline all-MiniLM-L6-v2, response tokens)
ENCODERS = {
    "minilm": ("minilm", 380),
    "bert": ("bert-base-uncased", 380),
    "distilbert": ("distilbert-base-uncased", 380),
    "roberta": ("roberta-base", 380),
    "electra": ("google/electra-base-discriminator", 380),
    "albert": ("albert-base-v2", 380),
    "deberta-v3": ("microsoft/deberta-v3-base", 512),
}
FREEZE_MODES = ("frozen", "bottom_frozen", "full")


def get_config(arg=None):
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  unknown = [p for p in parts if p not in ENCODERS and p not in FREEZE_MODES and p != "smoke"]
  if unknown:
    raise ValueError(f"Unknown variant part(s) {unknown} of configs/arena_classifier.py; use "
                     f"an encoder ({', '.join(ENCODERS)}), a freezing mode "
                     f"({', '.join(FREEZE_MODES)}) or smoke.")
  encoder = next((p for p in parts if p in ENCODERS), "minilm")
  freeze = next((p for p in parts if p in FREEZE_MODES), "full")
  checkpoint, response_tokens = ENCODERS[encoder]

  c = config_base.schema(("classifier", "arena"))
  c.name = f"arena-{encoder}-{freeze}"  # Run name.
  c.job = "classify"  # Runs llmjax.train.classify.

  c.classifier.init_from = checkpoint  # Encoder checkpoint of the chosen variant.
  c.classifier.freeze = freeze  # Freezing mode of the chosen variant.
  c.arena.response_max_tokens = response_tokens  # Response tokens kept per side.

  c.train.steps = 3000  # Optimizer steps.
  c.train.batch_size = 32  # Pairs per step.
  c.train.eval_every = 250  # Validation cadence.
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
  if "smoke" in parts:
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
