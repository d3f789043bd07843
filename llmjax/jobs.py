"""Maps `config.job` to the function that runs it, and to the config sections it reads.

A key the user sets (`--config.KEY=...`, `Trainer(section__key=...)`) that the chosen job
never reads is refused before any work (`check_overrides`)."""

from __future__ import annotations

import pathlib
from typing import Callable

import jax
import ml_collections

from llmjax import config_util
from llmjax import errors

JOBS: dict[str, Callable[[ml_collections.ConfigDict, str], object]] = {}
# Job -> (sections it reads, keys inside them it never reads: a tuple, or a function of
# the config giving them).
READS: dict[str, tuple[tuple[str, ...], object]] = {}
LM_SECTIONS = ("model", "train", "optim", "data", "notes", "mesh", "track")


def lm_unread(config) -> tuple[str, ...]:
  """Keys of the LM sections that this config's model and data source leave unread."""
  unread = []
  if config.model.arch != "conv_attention":
    unread.append("model.fan_in")
  if config.data.source != "hf":
    unread += ["data.hf_config", "data.hf_split", "data.hf_streaming"]
  return tuple(unread)


def job(name: str, reads: tuple[str, ...] = LM_SECTIONS, ignores=lm_unread):
  def register(fn):
    JOBS[name] = fn
    READS[name] = (reads, ignores)
    return fn
  return register


def check_overrides(config: ml_collections.ConfigDict, keys) -> None:
  """Refuses overridden `keys` that `config.job` never reads."""
  name = config.get("job", "train")
  if name in READS:
    reads, ignores = READS[name]
    config_util.check_keys_read(name, reads, ignores(config) if callable(ignores) else ignores,
                                keys)


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


@job("progressive", reads=LM_SECTIONS + ("progressive", "lora"),
     ignores=lambda c: lm_unread(c) + ("model.init_from",))
def progressive_job(config, workdir):
  from llmjax.parallel import mesh  # pylint: disable=import-outside-toplevel
  mesh.maybe_initialize_distributed()
  from llmjax.train import progressive  # pylint: disable=import-outside-toplevel
  result = progressive.train(config, workdir)
  if result.final_val_loss is not None:
    print(f"Done: step {result.step} (stages began at steps {result.stage_steps}), val loss "
          f"{result.final_val_loss:.4f}, {result.tokens_per_s:,.0f} tokens/s.")
  return result


@job("arch_compare", reads=LM_SECTIONS + ("compare", "progressive", "lora"),
     ignores=("model.init_from", "data.hf_config", "data.hf_split", "data.hf_streaming"))
def arch_compare_job(config, workdir):
  from llmjax.experiments import arch_compare  # pylint: disable=import-outside-toplevel
  return arch_compare.run(config, workdir)


@job("classify", reads=("classifier", "arena", "train", "optim", "mesh", "track"),
     ignores=("train.sample_tokens", "train.sample_prompt"))
def classify_job(config, workdir):
  from llmjax.parallel import mesh  # pylint: disable=import-outside-toplevel
  mesh.maybe_initialize_distributed()
  from llmjax.train import classify  # pylint: disable=import-outside-toplevel
  if config.arena.runs:  # An experiment set: one run per entry, then the set's table.
    from llmjax.experiments import arena_sets  # pylint: disable=import-outside-toplevel
    return arena_sets.run_set(config, workdir, classify.train_for_set)
  return classify.train(config, workdir)


@job("notes_experiment", reads=LM_SECTIONS + ("experiment",),
     ignores=lambda c: lm_unread(c) + ("experiment.levels",))
def notes_experiment_job(config, workdir):
  """Notes corpora, experiment 1: pre / post / blank / none (llmjax.experiments.notes)."""
  return _notes_job("run_experiment", config, workdir)


@job("notes_richness", reads=LM_SECTIONS + ("experiment",),
     ignores=lambda c: lm_unread(c) + ("experiment.variants",))
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
