"""The Python API: `Trainer` and `Sampler` (nothing inside llmjax but `cli` imports this)."""

from llmjax.api.sampler import MODEL_ARGS, TEXT_ARGS, Sampler
from llmjax.api.trainer import Trainer, config_path
from llmjax.runs.load import load_model, load_run_config

__all__ = [
  "MODEL_ARGS",
  "TEXT_ARGS",
  "Sampler",
  "Trainer",
  "config_path",
  "load_model",
  "load_run_config",
]
