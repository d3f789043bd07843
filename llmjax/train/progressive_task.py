"""Staged training of `model.arch='progressive'` (job `progressive`): the LM job plus a
stage switch, run by `llmjax.train.runner`.

The run's `train.steps` are cut into stages by `progressive.stage_fractions` (default a
third each, so each stage sees a third of the training tokens). At a stage boundary the
model is grown (`models.progressive.grow_params`: copied blocks, merged and frozen
attention, fresh zero-initialised adapters) and a new optimizer is built for the new
parameter tree.

Optimizer state across a switch: parameters that carry over keep their Adam moments (a
copied block gets a copy of its source block's moments); new parameters (the adapters)
start from zero moments; frozen attention weights have no optimizer state at all. The
step count, and with it Adam's bias correction and the learning-rate schedule, continue.

Each checkpoint holds the state of the stage that runs the step after it (the switch
happens before the boundary step is evaluated and saved), so resuming builds that stage's
model and restores into it; an unreadable newest checkpoint falls back to an older one,
of an earlier stage if need be. The run's `config.json` names the stage in `model.stage`,
so `llmjax.api.load_model` and `llmjax.sample` rebuild the right model. The best slot is
refreshed at every switch, so it always holds the current stage's parameters.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import jax
import ml_collections
import numpy as np
from flax import nnx

from llmjax import models
from llmjax.models import lora as lora_lib
from llmjax.models import progressive as progressive_lib
from llmjax.runs import checkpoint as ckpt_lib
from llmjax.train import lm, runner
from llmjax.train.task import ModelSwitch
from llmjax.util import errors


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProgressiveResult(lm.LMResult):
  """An LM result plus the step each stage began at."""

  stage_steps: list[int]


def train(
  config: ml_collections.ConfigDict, workdir: str | pathlib.Path, **kw
) -> ProgressiveResult:
  check_config(config)
  return runner.run(config, workdir, ProgressiveTask, **kw)


def stage_boundaries(total_steps: int, fractions) -> list[int]:
  """Cumulative end step of each stage; the last is `total_steps`."""
  fractions = [float(f) for f in fractions]
  if not fractions or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
    raise errors.ConfigError(
      f"progressive.stage_fractions={tuple(fractions)} must be positive and sum to 1, one "
      "per stage, e.g. (1/3, 1/3, 1/3)."
    )
  ends = [int(round(total_steps * f)) for f in np.cumsum(fractions)[:-1]] + [total_steps]
  if any(b <= a for a, b in zip([0] + ends, ends)):
    raise errors.ConfigError(
      f"train.steps={total_steps} is too few for progressive.stage_fractions="
      f"{tuple(fractions)}: a stage would get no step ({ends}). Raise train.steps."
    )
  return ends


def stage_at(step: int, boundaries: list[int]) -> int:
  """The (1-based) stage that runs the step after `step` steps are done."""
  for k, end in enumerate(boundaries):
    if step < end:
      return k + 1
  return len(boundaries)


def model_section(config: ml_collections.ConfigDict, stage: int) -> ml_collections.ConfigDict:
  """The `model` section (the progressive model's: stages and adapters) at `stage`."""
  section = ml_collections.ConfigDict(config.model.to_dict())
  section.stage = stage
  return section


def check_config(config) -> None:
  if config.model.get("arch") != "progressive":
    raise errors.ConfigError(
      f"config.job='progressive' trains model.arch='progressive', got "
      f"{config.model.get('arch')!r}; start the config from "
      "schema.schema(('progressive',), arch='progressive') (see configs/progressive.py)."
    )
  groups = tuple(config.model.stage_groups)
  if len(groups) != len(tuple(config.progressive.stage_fractions)):
    raise errors.ConfigError(
      f"progressive.stage_fractions has {len(tuple(config.progressive.stage_fractions))} "
      f"entries but model.stage_groups={groups} has {len(groups)}: one per stage."
    )
  stage_boundaries(config.train.steps, config.progressive.stage_fractions)
  for stage in range(1, len(groups) + 1):
    models.model_config(model_section(config, stage))  # Raises with the offending key.


def stage_seed(config, stage: int) -> int:
  return int(config.train.seed) + 1000 * (stage - 1)


def trainable(params):
  """Everything but the base attention weights that sit next to adapters."""
  return jax.tree.map(lambda frozen: not frozen, lora_lib.frozen_mask(params))


_BLOCK = re.compile(r"\['h'\]\[(\d+)\]")


def carry_moments(old_opt_state, new_opt_state, ratio: int):
  """New optimizer state that reuses the old one where a parameter carries over.

  Leaves are matched by path: block j of the new stage reads block j // ratio of the old
  one; adapter (`lora_*`) moments stay fresh; counts carry over.
  """
  old = {
    jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(old_opt_state)[0]
  }

  def pick(path, new_leaf):
    key = jax.tree_util.keystr(path)
    if "lora_" in key:
      return new_leaf
    src = _BLOCK.sub(lambda m: f"['h'][{int(m.group(1)) // ratio}]", key)
    match = old.get(src)
    if match is not None and match.shape == new_leaf.shape and match.dtype == new_leaf.dtype:
      return match
    return new_leaf

  return jax.tree_util.tree_map_with_path(pick, new_opt_state)


class ProgressiveTask(lm.LMTask):
  """The LM task whose model grows at each stage boundary (a `ModelSwitch` hook)."""

  result_type = ProgressiveResult

  def __init__(self, config, workdir, latest_step):
    super().__init__(config, workdir, latest_step)
    self.boundaries = stage_boundaries(config.train.steps, config.progressive.stage_fractions)
    self.stage = stage_at(latest_step or 0, self.boundaries)
    self.stages = {}
    self.hooks = (ModelSwitch(due=self.switch_due, apply=self.switch),)

  def run_config(self):
    out = ml_collections.ConfigDict(self.config.to_dict())
    out.model = model_section(self.config, self.stage)
    return out

  def stage_steps(self, stage: int) -> lm.Steps:
    if stage not in self.stages:
      self.stages[stage] = lm.build_steps(
        self.config,
        self.mesh,
        model_cfg=model_section(self.config, stage),
        seed=stage_seed(self.config, stage),
        trainable=trainable,
        pretrained=False,
      )
    return self.stages[stage]

  @property
  def steps(self) -> lm.Steps:
    return self.stage_steps(self.stage)

  def setup(self):
    return self.load_data()

  def startup_line(self, num_params, start_step):
    return (
      f"llmjax: {self.config.name} | progressive stage {self.stage} of "
      f"{len(self.boundaries)} | {num_params / 1e6:.2f}M parameters | stage ends at "
      f"steps {self.boundaries} | {len(self.splits.train):,} train / "
      f"{len(self.splits.val):,} val tokens"
    )

  def abstract_state(self, step):
    steps = self.stage_steps(stage_at(step, self.boundaries))
    return ckpt_lib.abstract_like(steps.abstract_state, steps.state_shardings)

  def restored(self, step, state):
    self.stage = stage_at(step, self.boundaries)

  def record_extras(self):
    return {"stage": self.stage}

  def switch_due(self, step):
    return stage_at(step, self.boundaries) != self.stage

  def switch(self, state, step):
    prev = self.steps
    prev_cfg = models.model_config(model_section(self.config, self.stage))
    self.stage = stage_at(step, self.boundaries)
    nxt, section = self.steps, model_section(self.config, self.stage)
    nxt_cfg = models.model_config(section)
    seed = stage_seed(self.config, self.stage)
    ratio = nxt_cfg.n_groups // prev_cfg.n_groups
    del prev

    def transition(state):
      fresh = nnx.to_pure_dict(nnx.state(models.build(section, seed)))
      params = progressive_lib.grow_params(state["params"], prev_cfg, fresh, nxt_cfg)
      params = jax.tree.map(jax.lax.with_sharding_constraint, params, nxt.param_shardings)
      opt_state = carry_moments(state["opt_state"], nxt.tx.init(params), ratio)
      return {"params": params, "opt_state": opt_state, "step": state["step"]}

    return jax.jit(transition, out_shardings=nxt.state_shardings)(state)

  def finish(self, state, interrupted, best_eval, test):
    out = super().finish(state, interrupted, best_eval, test)
    return {**out, "stage_steps": [0] + self.boundaries[:-1]}
