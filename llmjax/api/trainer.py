"""`Trainer`: runs what `python -m llmjax.main` runs, from Python.

  from llmjax import Trainer
  Trainer(out_dir="runs/kafka", dataset="book.txt", n_layer=6, n_head=6).run()

Keywords are the book-learning library's flat names (`llmjax.api.names`), llmjax config
keys as `section__key`, or an llmjax key's unique last part.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import ml_collections

from llmjax import jobs
from llmjax.api import names as api_names
from llmjax.config import docs as config_docs
from llmjax.config import load as config_load
from llmjax.config import validate as config_validate
from llmjax.pretrained import init_from
from llmjax.train import shape
from llmjax.util import errors

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
BOOK_CONFIG = "configs/book.py"
FINETUNE_CONFIG = "configs/book_finetune.py"
DEFAULT_CONFIG = "configs/shakespeare.py"


def config_path(spec: str) -> str:
  """`spec` as given if its file exists here, else relative to the llmjax checkout."""
  path, sep, variant = spec.partition(":")
  if not pathlib.Path(path).is_file() and (REPO_ROOT / path).is_file():
    return f"{REPO_ROOT / path}{sep}{variant}"
  return spec


def _default_config(kwargs: dict[str, Any]) -> str:
  """A book run for `dataset=`, a fine-tune for `init_from=<GPT-2>`, else Shakespeare."""
  start = str(kwargs.get("init_from", "scratch"))
  if start not in ("scratch", "resume"):
    size = init_from.gpt2_hub_name(start)  # A pinned gpt2-medium@REV is still medium.
    return f"{FINETUNE_CONFIG}:{size}" if size else FINETUNE_CONFIG
  if "dataset" in kwargs or "training_data_path" in kwargs:
    return BOOK_CONFIG
  return DEFAULT_CONFIG


class Trainer:
  """Trains (or resumes) a run, exactly as `python -m llmjax.main` would.

  `config` is a path spec (`configs/book.py:cpu`) or a ConfigDict; without it a
  `dataset=` run starts from `configs/book.py`, an `init_from='gpt2...'` run from
  `configs/book_finetune.py`, anything else from `configs/shakespeare.py`. Keywords
  override it (see the module docstring); `overrides` takes dotted keys. A run given a
  `dataset=` stops when the evaluation loss stops improving (`patience`).
  """

  def __init__(
    self,
    workdir: str | pathlib.Path | None = None,
    config: str | ml_collections.ConfigDict | None = None,
    overrides: dict[str, Any] | None = None,
    **kwargs,
  ):
    if not isinstance(config, ml_collections.ConfigDict):
      config = config_load.load_config(config_path(config or _default_config(kwargs)))
    self.config = ml_collections.ConfigDict(config.to_dict())
    names = api_names.resolve(kwargs, self.config)
    if workdir is not None and names.workdir is not None:
      raise errors.ConfigError(
        f"Pass workdir= or out_dir=, not both (got {workdir!r} and {str(names.workdir)!r})."
      )
    config_load.apply_overrides(self.config, {**(overrides or {}), **names.overrides})
    explicit = names.explicit | {k.replace("__", ".") for k in (overrides or {})}
    self._book_defaults(kwargs, explicit)
    config_validate.validated(self.config)  # Once: the run does not validate it again.
    if any(name in api_names.BY_NAME for name in kwargs):
      self._fit_mesh_to_batch()  # A mesh it changes is checked again when the run starts.
    jobs.check_overrides(self.config, [*(overrides or {}), *names.overrides])
    self.workdir = pathlib.Path(workdir or names.workdir or f"runs/{self.config.name}")
    if names.resume and not (self.workdir / "config.json").is_file():
      raise errors.RunNotFoundError(
        f"init_from='resume' but {self.workdir} holds no run to resume; train it first, or "
        "use init_from='scratch'."
      )

  def _book_defaults(self, kwargs: dict[str, Any], explicit: set[str]) -> None:
    c = self.config
    if (
      ("dataset" in kwargs or "training_data_path" in kwargs)
      and not c.train.patience
      and "train.patience" not in explicit
    ):
      c.train.patience = api_names.BOOK_PATIENCE  # Book runs stop when learning stalls.
    if "init_from" in kwargs and "data.tokenizer" not in explicit:
      if init_from.is_pretrained(c.model):
        c.data.tokenizer = init_from.tokenizer_for(c.model.init_from) or c.data.tokenizer

  def _fit_mesh_to_batch(self) -> None:
    """The book library trains on one device; here a batch that does not split over every
    local device trains on the largest number of them it does split over."""
    m = self.config.mesh
    if m.num_devices or m.tensor != 1:
      return
    micro, n = shape.lm_shape(self.config).micro_batch, jax.device_count()
    if micro % n:
      m.num_devices = max(d for d in range(1, n + 1) if micro % d == 0)
      print(
        f"llmjax: {micro} sequences per micro-batch do not split over {n} devices; "
        f"training on {m.num_devices} (set mesh__num_devices to choose).",
        flush=True,
      )

  @staticmethod
  def help_config(config: str | None = None) -> str:
    """Prints (and returns) every keyword: the flat names, then every config key."""
    spec = config_path(config or BOOK_CONFIG)
    loaded = config_load.load_config(spec)
    text = (
      f"{api_names.help_text(loaded)}\n\nEvery config key (keyword section__key=..., "
      f"values from {spec}):\n{config_docs.help_text(loaded, spec)}"
    )
    print(text)
    return text

  def run(self):
    return jobs.run(self.config, str(self.workdir))
