"""The shape of a run: its length and every batch quantity derived from the config.

`lm_shape` (the LM and progressive jobs) and `pair_shape` (the classifier) build a frozen
`RunShape` once, from the validated config and the mesh's batch axes; the runner, the jobs,
`llmjax.api.Trainer` and the experiments read it instead of re-deriving the micro-batch,
the units per step or the evaluation batch themselves.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from llmjax.data import arena
from llmjax.util import errors


@dataclasses.dataclass(frozen=True)
class RunShape:
  """How long a run is and how its batches are sized (rows: sequences or pairs)."""

  unit: str  # What `per_step` counts: tokens or pairs (metrics carry `<unit>_per_s`).
  steps: int  # Optimizer steps of the run.
  eval_every: int  # Evaluate every N steps (0 = only at the end).
  batch: int  # Rows per optimizer step, over all devices and micro-batches.
  grad_accum: int  # Micro-batches per optimizer step.
  micro_batch: int  # Rows per micro-batch: batch / grad_accum.
  batch_axes: int  # Devices on the data x fsdp mesh axes (1 without a mesh).
  eval_batch: int  # Rows per evaluation batch.
  per_step: int  # Units per optimizer step.
  steps_per_epoch: int = 0  # Steps per pass over the training rows (0 = not counted).


def _micro_batch(tc: ml_collections.ConfigDict, batch_axes: int, rows: str) -> int:
  micro = tc.batch_size // tc.grad_accum
  if micro % batch_axes:
    raise errors.ConfigError(
      f"train.batch_size / train.grad_accum = {micro} {rows} per micro-batch must be "
      f"divisible by the {batch_axes} devices on the data x fsdp mesh axes."
    )
  return micro


def lm_shape(config: ml_collections.ConfigDict, batch_axes: int = 1) -> RunShape:
  """A token-stream run: `train.batch_size` windows of `model.block_size` tokens per step;
  evaluation batches hold one micro-batch (at least one window per batch device)."""
  tc = config.train
  micro = _micro_batch(tc, batch_axes, "sequences")
  return RunShape(
    unit="tokens",
    steps=tc.steps,
    eval_every=tc.eval_every,
    batch=tc.batch_size,
    grad_accum=tc.grad_accum,
    micro_batch=micro,
    batch_axes=batch_axes,
    eval_batch=max(batch_axes, micro),
    per_step=tc.batch_size * config.model.block_size,
  )


def pair_shape(config: ml_collections.ConfigDict, n_train: int, batch_axes: int = 1) -> RunShape:
  """A classifier run over `n_train` pairs: with `arena.epochs` > 0 the run lasts that many
  passes and evaluates once per pass (`train.steps` and `train.eval_every` are not read);
  evaluation batches hold one optimizer batch (at least one pair per batch device)."""
  tc, epochs = config.train, config.arena.epochs
  micro = _micro_batch(tc, batch_axes, "pairs")
  if epochs > 0:
    steps, per_epoch = arena.epoch_steps(n_train, tc.batch_size, epochs)
    eval_every = per_epoch
  else:
    steps, eval_every, per_epoch = tc.steps, tc.eval_every, max(n_train // tc.batch_size, 1)
  return RunShape(
    unit="pairs",
    steps=steps,
    eval_every=eval_every,
    batch=tc.batch_size,
    grad_accum=tc.grad_accum,
    micro_batch=micro,
    batch_axes=batch_axes,
    eval_batch=max(tc.batch_size, batch_axes),
    per_step=tc.batch_size,
    steps_per_epoch=per_epoch,
  )
