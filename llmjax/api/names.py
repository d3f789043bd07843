"""The book-learning library's flat keyword names, mapped onto llmjax config keys.

Users of that library write `Trainer(out_dir='kafka', dataset=URL, batch_size=4, ...)`.
`FLAT_NAMES` is the one table that says what each of its documented names means here;
`resolve` turns a dict of keyword arguments into a workdir and dotted config overrides.
A keyword may also be `section__key` (`train__steps=10`) or the last part of an llmjax
key when only one key ends that way (`steps=10`); anything else is an error that lists
the choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import pathlib
from typing import Any

import ml_collections

from llmjax.config import load as config_load
from llmjax.util import errors

URL_PREFIXES = ("http://", "https://", "file://")
# Corpora that `dataset=` names instead of a path or URL.
NAMED_DATASETS = ("shakespeare",)
# The book library's default for early stopping; book runs stop after this many
# evaluations without a better loss unless `patience` says otherwise.
BOOK_PATIENCE = 5


@dataclasses.dataclass(frozen=True)
class FlatName:
  name: str  # The keyword, as the book library spells it.
  key: str  # The llmjax config key it sets ("" = handled in `resolve`).
  meaning: str  # The book library's help text, with what differs here.


def _flat(name: str, key: str, meaning: str) -> FlatName:
  return FlatName(name, key, meaning)


FLAT_NAMES: tuple[FlatName, ...] = (
  _flat(
    "out_dir",
    "",
    "Run directory (llmjax's workdir): checkpoints, metrics, config. "
    "A relative path is relative to the current directory.",
  ),
  _flat(
    "dataset",
    "data.path",
    "The text to learn: a URL (data.source=url, downloaded once "
    "and cached), a local text file (data.source=file) or 'shakespeare' (bundled).",
  ),
  _flat("training_data_path", "data.path", "A local text file to learn (data.source=file)."),
  _flat(
    "init_from",
    "model.init_from",
    "'scratch', 'resume' (go on from out_dir; llmjax "
    "resumes a workdir on its own) or a GPT-2 checkpoint: gpt2, gpt2-medium, gpt2-large, "
    "gpt2-xl or a local Hugging Face directory.",
  ),
  _flat("seed", "train.seed", "Random seed (initialisation, data order, dropout)."),
  _flat("dtype", "model.dtype", "Compute dtype: 'float32' or 'bfloat16'."),
  _flat(
    "train_ratio",
    "data.val_fraction",
    "Fraction of the text used for training "
    "(val_fraction = 1 - train_ratio); 1.0 learns the whole text.",
  ),
  _flat("eval_interval", "train.eval_every", "How often (in steps) to evaluate the model."),
  _flat("log_interval", "train.log_every", "How often (in steps) to log the training loss."),
  _flat("eval_iters", "train.eval_batches", "How many batches each evaluation averages."),
  _flat(
    "encoding",
    "data.tokenizer",
    "Tokenizer: 'gpt2' (BPE), 'char' (UTF-8 bytes) or 'bpe:<tokenizer.json>'.",
  ),
  _flat(
    "gradient_accumulation_steps",
    "train.grad_accum",
    "Gradient accumulation steps, used to simulate larger batch sizes.",
  ),
  _flat(
    "batch_size",
    "train.batch_size",
    "Batch size. If gradient_accumulation_steps > 1, "
    "this is the micro-batch size (train.batch_size = batch_size * "
    "gradient_accumulation_steps).",
  ),
  _flat("block_size", "model.block_size", "Block size (aka context length)."),
  _flat("n_layer", "model.n_layer", "Number of layers."),
  _flat("n_head", "model.n_head", "Number of attention heads per layer."),
  _flat("n_embd", "model.n_embd", "Embedding dimension."),
  _flat(
    "dropout", "model.dropout", "Dropout rate. For pretraining 0 is good, for finetuning try 0.1+."
  ),
  _flat("bias", "model.bias", "Biases in linear layers and LayerNorms."),
  _flat("learning_rate", "optim.learning_rate", "(Peak) learning rate."),
  _flat(
    "max_iters",
    "train.steps",
    "Maximum number of iterations (early stopping usually ends a book run first).",
  ),
  _flat("weight_decay", "optim.weight_decay", "AdamW weight decay."),
  _flat("beta1", "optim.beta1", "AdamW beta1."),
  _flat("beta2", "optim.beta2", "AdamW beta2 (should be reduced for larger models / datasets)."),
  _flat("grad_clip", "optim.grad_clip", "Gradient clipping; disabled if 0.0."),
  _flat(
    "decay_lr",
    "optim.min_lr_ratio",
    "Whether to decay the learning rate (cosine after "
    "warmup). False: a constant learning_rate, no warmup.",
  ),
  _flat("warmup_iters", "optim.warmup_steps", "Linear warmup iterations."),
  _flat(
    "lr_decay_iters",
    "train.steps",
    "Iterations of the cosine decay: llmjax decays over max_iters, so this must equal max_iters.",
  ),
  _flat(
    "min_lr",
    "optim.min_lr_ratio",
    "Minimum learning rate, should be ~= learning_rate/10 (min_lr_ratio = min_lr / learning_rate).",
  ),
  _flat(
    "patience",
    "train.patience",
    "How many evaluations without improvement to wait before stopping early (0 = never).",
  ),
)
BY_NAME = {f.name: f for f in FLAT_NAMES}

# The book library's names that have no counterpart here, with what to do instead.
NOT_SUPPORTED = {
  "torch_compile": "llmjax always compiles with XLA (jax.jit); remove torch_compile.",
  "device": "JAX uses the accelerator it finds; to force the CPU set JAX_PLATFORMS=cpu.",
  "backend": "multi-device training needs no DDP backend: one process drives every local "
  "device (see launch/ for several hosts).",
  "eval_only": "evaluation happens inside training; to score a model, sample from it with "
  "llmjax.Sampler.",
  "always_save_checkpoint": "llmjax saves every train.checkpoint_every steps and keeps the "
  "best-validation parameters apart (DIR/best).",
  "override_checkpoint": "llmjax keeps the latest train.keep_checkpoints checkpoints.",
  "wandb_log": "llmjax logs DIR/metrics.jsonl always and MLflow with track__mlflow=True.",
  "wandb_project": "llmjax logs to MLflow: use track__experiment=NAME.",
  "wandb_run_name": "llmjax logs to MLflow: use track__run_name=NAME.",
}


def is_url(text: str) -> bool:
  return text.startswith(URL_PREFIXES)


def _leaf_index(config: ml_collections.ConfigDict) -> dict[str, list[str]]:
  index: dict[str, list[str]] = {}
  for key in config_load.flatten(config):
    index.setdefault(key.rsplit(".", 1)[-1], []).append(key)
  return index


def _unknown(name: str, config: ml_collections.ConfigDict) -> errors.ConfigError:
  choices = sorted({*BY_NAME, *_leaf_index(config)})
  near = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
  hint = f" Did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
  return errors.ConfigError(
    f"Unknown keyword {name}=.{hint} Flat names: {', '.join(choices)}; or any config key "
    "as section__key (Trainer.help_config() lists them all)."
  )


def dotted_key(name: str, config: ml_collections.ConfigDict) -> str:
  """The config key an llmjax keyword names: `section__key`, or a unique last part."""
  if "__" in name:
    return name.replace("__", ".")
  matches = _leaf_index(config).get(name, [])
  if len(matches) == 1:
    return matches[0]
  if len(matches) > 1:
    raise errors.ConfigError(
      f"Keyword {name}= is ambiguous: it could be "
      f"{' or '.join(m.replace('.', '__') for m in matches)}; use one of those."
    )
  raise _unknown(name, config)


@dataclasses.dataclass
class Resolved:
  workdir: pathlib.Path | None
  overrides: dict[str, Any]  # Dotted config keys -> values.
  resume: bool  # init_from='resume': the workdir must already hold a run.
  explicit: set[str]  # Dotted keys the caller set (by any name).


def _dataset_overrides(name: str, value: Any) -> dict[str, Any]:
  text = str(value)
  if name == "dataset" and text in NAMED_DATASETS:
    return {"data.source": text, "data.path": ""}
  if name == "dataset" and is_url(text):
    return {"data.source": "url", "data.path": text}
  path = pathlib.Path(text).expanduser()
  if not path.is_file():
    raise errors.DataFileNotFoundError(
      f"{name}={text!r}: no such file. Pass a URL (http://, https://, file://), the path of "
      f"a local text file, or one of {NAMED_DATASETS}."
    )
  return {"data.source": "file", "data.path": str(path)}


def resolve(kwargs: dict[str, Any], config: ml_collections.ConfigDict) -> Resolved:
  """Splits keyword arguments into the workdir and dotted config overrides."""
  workdir, resume, out = None, False, {}
  flat = {k: v for k, v in kwargs.items() if k in BY_NAME}
  for name, value in kwargs.items():
    if name in NOT_SUPPORTED:
      raise errors.ConfigError(f"{name}= has no counterpart in llmjax: {NOT_SUPPORTED[name]}")
    if name in flat:
      continue
    out[dotted_key(name, config)] = value
  if "dataset" in flat and "training_data_path" in flat:
    raise errors.ConfigError("Pass dataset= or training_data_path=, not both.")
  for name, value in flat.items():
    entry = BY_NAME[name]
    if name == "out_dir":
      workdir = pathlib.Path(value).expanduser()
    elif name in ("dataset", "training_data_path"):
      out.update(_dataset_overrides(name, value))
    elif name == "init_from":
      resume = value == "resume"
      if not resume:
        out[entry.key] = str(value)
    elif name == "train_ratio":
      if not 0.0 < value <= 1.0:
        raise errors.ConfigError(
          f"train_ratio={value!r} must be in (0, 1]; 1.0 learns the whole text."
        )
      out[entry.key] = round(1.0 - float(value), 12)
    elif name in ("decay_lr", "min_lr", "lr_decay_iters", "batch_size"):
      continue  # Depend on other values: below.
    else:
      out[entry.key] = value
  _learning_rate_schedule(flat, out, config)
  _batch(flat, out, config)
  explicit = set(out) | ({"data.val_fraction"} if "train_ratio" in flat else set())
  return Resolved(workdir, out, resume, explicit)


def _current(key: str, out: dict[str, Any], config: ml_collections.ConfigDict) -> Any:
  return out[key] if key in out else config_load.flatten(config)[key]


def _learning_rate_schedule(flat, out, config) -> None:
  if "lr_decay_iters" in flat and flat["lr_decay_iters"] != _current("train.steps", out, config):
    raise errors.ConfigError(
      f"lr_decay_iters={flat['lr_decay_iters']!r}: llmjax decays the learning rate over "
      f"max_iters (train.steps={_current('train.steps', out, config)}); drop lr_decay_iters "
      "or set max_iters to the same value."
    )
  if flat.get("decay_lr", True) is False:
    if "min_lr" in flat:
      raise errors.ConfigError(
        "min_lr= has no effect with decay_lr=False (a constant learning rate); drop one of them."
      )
    out["optim.min_lr_ratio"] = 1.0
    out["optim.warmup_steps"] = 0
  elif "min_lr" in flat:
    peak = _current("optim.learning_rate", out, config)
    out["optim.min_lr_ratio"] = float(flat["min_lr"]) / float(peak)


def _batch(flat, out, config) -> None:
  """The book library's batch_size is per micro-batch; llmjax's train.batch_size is not."""
  accum = _current("train.grad_accum", out, config)
  if "batch_size" in flat:
    out["train.batch_size"] = flat["batch_size"] * accum
  elif "gradient_accumulation_steps" in flat:
    old = config_load.flatten(config)
    out["train.batch_size"] = old["train.batch_size"] // old["train.grad_accum"] * accum


def help_text(config: ml_collections.ConfigDict) -> str:
  """The flat names with the llmjax key each sets, its value in `config` and its meaning."""
  values = config_load.flatten(config)
  lines = ["Flat names (as in the book-learning library):"]
  width = max(len(f.name) for f in FLAT_NAMES)
  for f in FLAT_NAMES:
    target = "workdir" if f.name == "out_dir" else f.key
    value = f" = {values[f.key]!r}" if f.key in values and f.name in _SHOW_VALUE else ""
    lines.append(f"  {f.name:<{width}}  -> {target}{value}: {f.meaning}")
  lines.append("\nNot available (what to do instead):")
  lines += [f"  {name:<{width}}  {why}" for name, why in NOT_SUPPORTED.items()]
  return "\n".join(lines)


# Flat names whose value is exactly the llmjax key's value (others are converted).
_SHOW_VALUE = {f.name for f in FLAT_NAMES} - {
  "out_dir",
  "dataset",
  "training_data_path",
  "train_ratio",
  "decay_lr",
  "lr_decay_iters",
  "min_lr",
  "batch_size",
}
