"""Staged training of `model.arch='progressive'` (job `progressive`).

The run's `train.steps` are cut into stages by `progressive.stage_fractions` (default a
third each, so each stage sees a third of the training tokens). At a stage boundary the
model is grown (`progressive.grow_params`: copied blocks, merged and frozen attention,
fresh zero-initialised adapters) and a new optimizer is built for the new parameter tree.

Optimizer state across a switch: parameters that carry over keep their Adam moments (a
copied block gets a copy of its source block's moments); new parameters (the adapters)
start from zero moments; frozen attention weights have no optimizer state at all. The
step count, and with it Adam's bias correction and the learning-rate schedule, continue.

Each checkpoint holds the state of the stage that runs the step after it (the stage
switch happens before the boundary step is evaluated and saved), so resuming builds that
stage's model and restores into it; the data iterator continues where it was. The run's
`config.json` names the stage in `model.stage`, so `llmjax.api.load_model` and
`llmjax.sample` rebuild the right model from the latest checkpoint. The best-checkpoint
slot is refreshed at every switch, so it always holds the current stage's parameters.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

from llmjax import config_util
from llmjax import models
from llmjax.data import pipeline
from llmjax.data import shards
from llmjax.data import tokenizer as tokenizer_lib
from llmjax.models import lora as lora_lib
from llmjax.models import progressive as progressive_lib
from llmjax.parallel import mesh as mesh_lib
from llmjax.train import checkpoint as ckpt_lib
from llmjax.train import loop
from llmjax.train import metrics as metrics_lib
from llmjax.train import optimizer as optim_lib
from llmjax.train import step as step_lib


@dataclasses.dataclass
class ProgressiveResult(loop.TrainResult):
  stage_steps: list[int] = dataclasses.field(default_factory=list)  # First step of each stage.
  resumed_from: int | None = None


def stage_boundaries(total_steps: int, fractions) -> list[int]:
  """Cumulative end step of each stage; the last is `total_steps`."""
  fractions = [float(f) for f in fractions]
  if not fractions or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
    raise ValueError(f"progressive.stage_fractions={tuple(fractions)} must be positive and "
                     "sum to 1, one per stage, e.g. (1/3, 1/3, 1/3).")
  ends = [int(round(total_steps * f)) for f in np.cumsum(fractions)[:-1]] + [total_steps]
  if any(b <= a for a, b in zip([0] + ends, ends)):
    raise ValueError(f"train.steps={total_steps} is too few for progressive.stage_fractions="
                     f"{tuple(fractions)}: a stage would get no step ({ends}). Raise "
                     "train.steps.")
  return ends


def stage_at(step: int, boundaries: list[int]) -> int:
  """The (1-based) stage that runs the step after `step` steps are done."""
  for k, end in enumerate(boundaries):
    if step < end:
      return k + 1
  return len(boundaries)


def model_section(config: ml_collections.ConfigDict, stage: int) -> ml_collections.ConfigDict:
  """The `model` section plus what the progressive model reads: stage and adapters."""
  section = ml_collections.ConfigDict(config.model.to_dict())
  section.arch = "progressive"
  section.stage = stage
  section.stage_groups = tuple(int(g) for g in config.progressive.stage_groups)
  section.lora_rank = int(config.lora.rank)
  section.lora_alpha = float(config.lora.alpha)
  section.lora_targets = ",".join(lora_lib.parse_targets(config.lora.targets))
  section.lora_fused = bool(config.lora.fused)
  return section


def run_config(config: ml_collections.ConfigDict, stage: int) -> ml_collections.ConfigDict:
  """The config written to the workdir: `model` carries the current stage."""
  out = ml_collections.ConfigDict(config.to_dict())
  out.model = model_section(config, stage)
  return out


@dataclasses.dataclass
class Stage:
  """Everything compiled for one stage."""
  stage: int
  model_cfg: progressive_lib.ProgressiveConfig
  section: ml_collections.ConfigDict
  graphdef: object
  tx: optax.GradientTransformation
  init_fn: object
  abstract_state: dict
  param_shardings: dict
  state_shardings: dict
  train_step: object
  eval_step: object


def stage_seed(config, stage: int) -> int:
  return int(config.train.seed) + 1000 * (stage - 1)


def make_tx(config) -> optax.GradientTransformation:
  """AdamW (llmjax.train.optimizer) on trainable parameters; frozen ones never move."""
  labels = lambda params: jax.tree.map(lambda f: "frozen" if f else "train",
                                       lora_lib.frozen_mask(params))
  return optax.multi_transform(
      {"train": optim_lib.make_optimizer(config.optim, config.train.steps),
       "frozen": optax.set_to_zero()}, labels)


def build_stage(config, stage: int, mesh) -> Stage:
  tc = config.train
  section = model_section(config, stage)
  seed = stage_seed(config, stage)
  model_cfg = models.model_config(section)
  abstract_model = nnx.eval_shape(lambda: models.build(section, seed))
  graphdef, abstract_params = nnx.split(abstract_model)
  param_shardings = mesh_lib.param_shardings(abstract_params, mesh)
  tx = make_tx(config)

  def init_fn():
    params = nnx.to_pure_dict(nnx.state(models.build(section, seed)))
    params = jax.tree.map(jax.lax.with_sharding_constraint, params, param_shardings)
    return step_lib.init_state(params, tx)

  abstract_state = jax.eval_shape(init_fn)
  state_shardings = loop.state_shardings_for(abstract_state, param_shardings, mesh)
  schedule = optim_lib.learning_rate_schedule(config.optim, tc.steps)
  batch_sharding = NamedSharding(mesh, P(None, ("data", "fsdp")))
  step_fn = step_lib.make_train_step(graphdef, tx, schedule, dropout=float(config.model.dropout),
                                     seed=tc.seed)
  train_step = jax.jit(mesh_lib.traced_under(mesh, step_fn),
                       in_shardings=(state_shardings, batch_sharding),
                       out_shardings=(state_shardings, mesh_lib.replicated(mesh)),
                       donate_argnums=0)
  eval_step = jax.jit(mesh_lib.traced_under(mesh, step_lib.make_eval_step(graphdef)),
                      in_shardings=(state_shardings["params"], mesh_lib.batch_sharding(mesh)))
  return Stage(stage, model_cfg, section, graphdef, tx, init_fn, abstract_state,
               param_shardings, state_shardings, train_step, eval_step)


_BLOCK = re.compile(r"\['h'\]\[(\d+)\]")


def carry_moments(old_opt_state, new_opt_state, ratio: int):
  """New optimizer state that reuses the old one where a parameter carries over.

  Leaves are matched by path: block j of the new stage reads block j // ratio of the old
  one; adapter (`lora_*`) moments stay fresh; counts carry over.
  """
  old = {jax.tree_util.keystr(p): v
         for p, v in jax.tree_util.tree_flatten_with_path(old_opt_state)[0]}

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


def make_transition(prev: Stage, nxt: Stage, config):
  """Jitted state(prev stage) -> state(next stage) with identical logits."""
  ratio = nxt.model_cfg.n_groups // prev.model_cfg.n_groups
  seed = stage_seed(config, nxt.stage)

  def transition(state):
    fresh = nnx.to_pure_dict(nnx.state(models.build(nxt.section, seed)))
    params = progressive_lib.grow_params(state["params"], prev.model_cfg, fresh, nxt.model_cfg)
    params = jax.tree.map(jax.lax.with_sharding_constraint, params, nxt.param_shardings)
    opt_state = carry_moments(state["opt_state"], nxt.tx.init(params), ratio)
    return {"params": params, "opt_state": opt_state, "step": state["step"]}

  return jax.jit(transition, out_shardings=nxt.state_shardings)


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
          stop_at_step: int | None = None) -> ProgressiveResult:
  """Trains (or resumes) a progressive run; `stop_at_step` saves and returns early there."""
  config_util.validate(config)
  check_config(config)
  workdir = pathlib.Path(workdir).absolute()
  with loop.workdir_lock(workdir), loop.StopSignal() as stop:
    return _train(config, workdir, stop, stop_at_step)


def check_config(config) -> None:
  for section in ("progressive", "lora"):
    if section not in config:
      raise config_util.ConfigError(
          f"config.job='progressive' needs a `{section}` section; start from "
          "configs/progressive.py.")
  groups = tuple(config.progressive.stage_groups)
  if len(groups) != len(tuple(config.progressive.stage_fractions)):
    raise config_util.ConfigError(
        f"progressive.stage_fractions has {len(tuple(config.progressive.stage_fractions))} "
        f"entries but progressive.stage_groups={groups} has {len(groups)}: one per stage.")
  stage_boundaries(config.train.steps, config.progressive.stage_fractions)
  for stage in range(1, len(groups) + 1):
    models.model_config(model_section(config, stage))  # Raises with the offending key.


def _train(config, workdir: pathlib.Path, stop, stop_at_step) -> ProgressiveResult:
  tc, mc = config.train, config.model
  is_chief = jax.process_index() == 0
  boundaries = stage_boundaries(tc.steps, config.progressive.stage_fractions)
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=tc.keep_checkpoints)
  latest = checkpointer.latest_step()
  resuming = latest is not None
  stage = stage_at(latest or 0, boundaries)
  if is_chief:
    loop.write_config(workdir, run_config(config, stage), resuming)

  tok = tokenizer_lib.get_tokenizer(config.data.tokenizer)
  if tok.vocab_size > mc.vocab_size:
    raise config_util.ConfigError(
        f"model.vocab_size={mc.vocab_size} is smaller than the tokenizer's vocabulary "
        f"({tok.vocab_size}); set --config.model.vocab_size={tok.vocab_size}.")
  splits = shards.prepare_tokens(config.data)
  mesh, batch_axes, micro = loop.training_mesh(config)
  n_proc, proc = jax.process_count(), jax.process_index()
  train_iter = pipeline.train_iterator(
      splits.train, mc.block_size, tc.batch_size, tc.seed, shard_index=proc, shard_count=n_proc)
  eval_data = pipeline.eval_batches(splits.val, mc.block_size, max(batch_axes, micro),
                                    tc.eval_batches)
  eval_data = [{k: np.split(np.asarray(v), n_proc)[proc] for k, v in b.items()}
               for b in eval_data]

  stages = {}

  def stage_for_step(step):  # Each checkpoint holds the state of the stage after its step.
    number = stage_at(step, boundaries)
    if number not in stages:
      stages[number] = build_stage(config, number, mesh)
    return stages[number]

  restored = None
  if resuming:
    restored = checkpointer.restore_latest(
        lambda step: ckpt_lib.abstract_like(stage_for_step(step).abstract_state,
                                            stage_for_step(step).state_shardings), train_iter)
  if restored is None:
    current = stage_for_step(0)
    state = jax.jit(current.init_fn, out_shardings=current.state_shardings)()
    start_step, meta, resuming = 0, {}, False
  else:
    start_step, state, meta = restored
    current = stage_for_step(start_step)
  if current.stage != stage:  # The newest checkpoint was unreadable and an older stage's was.
    stage = current.stage
    if is_chief:
      loop.write_config(workdir, run_config(config, stage), resuming=False)

  entropy = metrics_lib.unigram_entropy(splits.val)
  if is_chief:
    print(f"llmjax: {config.name} | progressive stage {stage} of {len(boundaries)} | "
          f"{loop.count_params(state['params']) / 1e6:.2f}M parameters | stage ends at steps "
          f"{boundaries} | {len(splits.train):,} train / {len(splits.val):,} val tokens" +
          (f" | resuming from step {start_step}" if resuming else ""), flush=True)

  batch_sharding = NamedSharding(mesh, P(None, ("data", "fsdp")))
  eval_sharding = mesh_lib.batch_sharding(mesh)
  writer = metrics_lib.MetricsWriter(workdir, resume_step=start_step if resuming else None,
                                     enabled=is_chief)
  tokens_per_step = tc.batch_size * mc.block_size
  if not resuming:
    writer.write({"step": 0, "stage": stage, "tokens": 0})
  best_val = meta.get("best_val_loss")
  evals_without_improvement = meta.get("evals_without_improvement", 0)
  last_val, stopped_early, interrupted = None, False, None
  last_eval_step = None

  def meta_now(step):
    return {"step": step, "stage": stage, "best_val_loss": best_val,
            "evals_without_improvement": evals_without_improvement, "config_name": config.name}

  def run_eval(step):
    nonlocal best_val, evals_without_improvement, last_val, last_eval_step
    last_eval_step = step
    last_val = loop.evaluate(current.eval_step, state["params"], eval_data, eval_sharding)
    if best_val is None or last_val < best_val:
      best_val, evals_without_improvement = last_val, 0
      checkpointer.save_best(step, state["params"], {"step": step, "val_loss": last_val,
                                                     "stage": stage})
    else:
      evals_without_improvement += 1
    writer.write({"step": step, "val_loss": last_val, "stage": stage,
                  "val_perplexity": metrics_lib.perplexity(last_val),
                  "tokens": step * tokens_per_step})

  bar = tqdm(total=tc.steps, initial=start_step, disable=not is_chief, unit="step",
             dynamic_ncols=True, desc=f"{config.name} stage {stage}")
  lagged = loop.LaggedMetrics(total_steps=tc.steps, log_every=tc.log_every,
                              tokens_per_step=tokens_per_step, checkpointer=checkpointer,
                              bar=bar, write=lambda record: writer.write({**record,
                                                                          "stage": stage}))
  step = start_step
  try:
    while step < tc.steps:
      batch = loop.to_global_batch(next(train_iter), tc.grad_accum, batch_sharding)
      state, device_metrics = current.train_step(state, batch)
      step += 1
      lagged.dispatched(step, device_metrics)

      switch = step < tc.steps and stage_at(step, boundaries) != stage
      is_eval = (tc.eval_every and step % tc.eval_every == 0) or step == tc.steps
      is_save = (tc.checkpoint_every and step % tc.checkpoint_every == 0) or step == tc.steps
      stop_here = stop_at_step is not None and step >= stop_at_step
      if switch or is_eval or is_save or stop.received or stop_here:
        lagged.flush()  # Never grow, evaluate or save a state whose loss was not finite.
      if switch:
        previous = current
        stage = stage_at(step, boundaries)
        current = build_stage(config, stage, mesh)
        state = make_transition(previous, current, config)(state)
        if is_chief:
          loop.write_config(workdir, run_config(config, stage), resuming=True)
        writer.write({"step": step, "stage": stage, "tokens": step * tokens_per_step})
        bar.set_description(f"{config.name} stage {stage}")
        best_val, evals_without_improvement = None, 0
        run_eval(step)  # Refreshes the best slot with this stage's parameters.
        lagged.restart_clock()  # Compilation is not throughput.

      if is_eval and last_eval_step != step:
        run_eval(step)
        bar.write(f"step {step} (stage {stage}): val loss {last_val:.4f} (best "
                  f"{best_val:.4f}, unigram entropy {entropy:.3f})") if is_chief else None
        if tc.patience and evals_without_improvement >= tc.patience:
          stopped_early = True
      if is_save or stopped_early or stop.received or stop_here:
        checkpointer.save(step, state, train_iter, meta_now(step))
      if stop.received or stop_here:
        interrupted = stop.received or "stop_at_step"
        break
      if stopped_early:
        break
    lagged.flush()
  finally:
    bar.close()
    writer.close()
    checkpointer.close()

  samples = []
  if tc.sample_tokens > 0 and not interrupted and is_chief:
    samples = loop.sample_after_training(current.graphdef, state["params"], tok, tc)
  return ProgressiveResult(
      workdir=workdir, step=step, final_train_loss=lagged.last and lagged.last["train_loss"],
      best_val_loss=best_val, final_val_loss=last_val, stopped_early=stopped_early,
      interrupted=interrupted is not None, samples=samples,
      num_params=loop.count_params(state["params"]), tokens_per_s=lagged.throughput,
      unigram_entropy=entropy, stage_steps=[0] + boundaries[:-1],
      resumed_from=start_step if resuming else None)
