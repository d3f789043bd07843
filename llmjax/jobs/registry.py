"""The job registry: `config.job` -> the function that runs it and the config sections it
reads. It imports no job; `llmjax.jobs.catalog` registers them.

A key the user sets (`--config.KEY=...`, `Trainer(section__key=...)`) that the chosen job
never reads is refused before any work (`check_overrides`)."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import ml_collections

from llmjax.config import validate as config_validate
from llmjax.util import errors

JobFn = Callable[[ml_collections.ConfigDict, str], object]
JOBS: dict[str, JobFn] = {}
# Job -> (sections it reads, keys inside them it never reads: a tuple, or a function of
# the config giving them).
READS: dict[str, tuple[tuple[str, ...], object]] = {}


def job(name: str, reads: tuple[str, ...], ignores=()):
  """Registers the decorated function as `config.job=name`."""

  def register(fn: JobFn) -> JobFn:
    JOBS[name] = fn
    READS[name] = (reads, ignores)
    return fn

  return register


def check_overrides(config: ml_collections.ConfigDict, keys) -> None:
  """Refuses overridden `keys` that `config.job` never reads."""
  name = config.get("job", "train")
  if name in READS:
    reads, ignores = READS[name]
    config_validate.check_keys_read(
      name, reads, ignores(config) if callable(ignores) else ignores, keys
    )


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path):
  """Runs `config.job` in `workdir`: what `python -m llmjax.main` and `llmjax.Trainer` do.
  User errors raise `llmjax.util.errors.LlmjaxError` (the command line prints them as one
  line)."""
  name = config.get("job", "train")
  if name not in JOBS:
    raise errors.ConfigError(f"Unknown config.job={name!r}; available: {', '.join(sorted(JOBS))}.")
  return JOBS[name](config, str(workdir))
