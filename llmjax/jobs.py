"""Maps `config.job` to the function that runs it."""

from __future__ import annotations

import pathlib
from typing import Callable

import jax
import ml_collections

from llmjax import errors

JOBS: dict[str, Callable[[ml_collections.ConfigDict, str], object]] = {}


def job(name: str):
  def register(fn):
    JOBS[name] = fn
    return fn
  return register


@job("train")
def train_job(config, workdir):
  from llmjax.parallel import mesh  # pylint: disable=import-outside-toplevel
  mesh.maybe_initialize_distributed()
  from llmjax.train import lm  # pylint: disable=import-outside-toplevel
  result = lm.train(config, workdir)
  if result.final_val_loss is not None and jax.process_index() == 0:
    print(f"Done: step {result.step}, val loss {result.final_val_loss:.4f} (best "
          f"{result.best_val_loss:.4f}; unigram entropy {result.unigram_entropy:.3f}), "
          f"{result.tokens_per_s:,.0f} tokens/s. Sample with: python -m llmjax.sample "
          f"--workdir={pathlib.Path(workdir)} --prompt=\"...\"")
  return result


@job("progressive")
def progressive_job(config, workdir):
  from llmjax.parallel import mesh  # pylint: disable=import-outside-toplevel
  mesh.maybe_initialize_distributed()
  from llmjax.train import progressive  # pylint: disable=import-outside-toplevel
  result = progressive.train(config, workdir)
  if result.final_val_loss is not None:
    print(f"Done: step {result.step} (stages began at steps {result.stage_steps}), val loss "
          f"{result.final_val_loss:.4f}, {result.tokens_per_s:,.0f} tokens/s.")
  return result


@job("arch_compare")
def arch_compare_job(config, workdir):
  from llmjax.experiments import arch_compare  # pylint: disable=import-outside-toplevel
  return arch_compare.run(config, workdir)


@job("classify")
def classify_job(config, workdir):
  from llmjax.parallel import mesh  # pylint: disable=import-outside-toplevel
  mesh.maybe_initialize_distributed()
  from llmjax.train import classify  # pylint: disable=import-outside-toplevel
  return classify.train(config, workdir)


@job("notes_experiment")
def notes_experiment_job(config, workdir):
  """Notes corpora, experiment 1: pre / post / blank / none (llmjax.experiments.notes)."""
  return _notes_job("run_experiment", config, workdir)


@job("notes_richness")
def notes_richness_job(config, workdir):
  """Notes corpora, experiment 2: tag richness of post notes (llmjax.experiments.notes)."""
  return _notes_job("run_richness", config, workdir)


def _notes_job(name, config, workdir):
  from llmjax.experiments import notes  # pylint: disable=import-outside-toplevel
  return getattr(notes, name)(config, workdir)


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path):
  """Runs `config.job` in `workdir`: what `python -m llmjax.main` and `llmjax.Trainer` do.
  User errors raise `llmjax.errors.LlmjaxError` (the command line prints them as one line)."""
  name = config.get("job", "train")
  if name not in JOBS:
    raise errors.ConfigError(f"Unknown config.job={name!r}; available: "
                             f"{', '.join(sorted(JOBS))}.")
  return JOBS[name](config, workdir)
