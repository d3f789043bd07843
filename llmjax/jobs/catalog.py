"""Every job `config.job` can name, registered with the sections it reads."""

from __future__ import annotations

import pathlib

import jax

from llmjax.experiments import arch_compare, arena_sets, notes_study
from llmjax.jobs.registry import job, run
from llmjax.parallel import mesh
from llmjax.train import classify, lm, progressive_task

LM_SECTIONS = ("model", "train", "optim", "data", "notes", "mesh", "track")


def lm_unread(config) -> tuple[str, ...]:
  """Keys of the LM sections that this config's data source leaves unread. (The `model`
  section holds only the keys its arch declares, so the schema refuses any other.)"""
  if config.data.source != "hf":
    return ("data.hf_config", "data.hf_split", "data.hf_streaming")
  return ()


@job("train", reads=LM_SECTIONS + ("recite",), ignores=lm_unread)
def train_job(config, workdir):
  mesh.maybe_initialize_distributed()
  result = lm.train(config, workdir)
  if result.final_val_loss is not None and jax.process_index() == 0:
    summary = result.summary or {}
    recited = (
      f", recited {summary['recited']} of {summary['recite_prompts']} tail prompts"
      if "recited" in summary
      else ""
    )
    print(
      f"Done: step {result.step}, val loss {result.final_val_loss:.4f} (best "
      f"{result.best_val_loss:.4f}; unigram entropy {result.unigram_entropy:.3f}){recited}, "
      f"{result.tokens_per_s:,.0f} tokens/s. Sample with: python -m llmjax.sample "
      f'--workdir={pathlib.Path(workdir)} --prompt="..."'
    )
  return result


@job(
  "progressive",
  reads=LM_SECTIONS + ("progressive",),
  # The job sets the stage it trains; its stages' softmax runs over every id.
  ignores=lambda c: lm_unread(c) + ("model.stage", "train.softmax_ids"),
)
def progressive_job(config, workdir):
  mesh.maybe_initialize_distributed()
  result = progressive_task.train(config, workdir)
  if result.final_val_loss is not None:
    print(
      f"Done: step {result.step} (stages began at steps {result.stage_steps}), val loss "
      f"{result.final_val_loss:.4f}, {result.tokens_per_s:,.0f} tokens/s."
    )
  return result


@job(
  "arch_compare",
  reads=LM_SECTIONS + ("compare", "progressive"),
  ignores=(
    "model.stage",
    "data.hf_config",
    "data.hf_split",
    "data.hf_streaming",
    "train.softmax_ids",
  ),
)
def arch_compare_job(config, workdir):
  return arch_compare.run(config, workdir, run)


@job(
  "classify",
  reads=("classifier", "arena", "train", "optim", "mesh", "track"),
  ignores=("train.sample_tokens", "train.sample_prompt", "train.softmax_ids"),
)
def classify_job(config, workdir):
  mesh.maybe_initialize_distributed()
  if config.arena.runs:  # An experiment set: one run per entry, then the set's table.
    return arena_sets.run_set(config, workdir, classify.train_for_set)
  return classify.train(config, workdir)


@job(
  "notes_experiment",
  reads=LM_SECTIONS + ("experiment",),
  ignores=lambda c: lm_unread(c) + ("experiment.levels",),
)
def notes_experiment_job(config, workdir):
  """Notes corpora, experiment 1: pre / post / blank / none (llmjax.experiments.notes_study)."""
  return notes_study.run_experiment(config, workdir)


@job(
  "notes_richness",
  reads=LM_SECTIONS + ("experiment",),
  ignores=lambda c: lm_unread(c) + ("experiment.variants",),
)
def notes_richness_job(config, workdir):
  """Notes corpora, experiment 2: tag richness of post notes (llmjax.experiments.notes_study)."""
  return notes_study.run_richness(config, workdir)
