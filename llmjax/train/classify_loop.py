"""Training loop of the arena pair classifier (`config.job = 'classify'`).

`train(config, workdir)`: load and encode the arena rows, build encoder + head (a
pretrained checkpoint or a scratch encoder), train with AdamW where the freezing mode
decides through an optax mask which parameters move, evaluate (accuracy, log loss,
confusion matrix against the majority-class and uniform baselines), checkpoint, stop
early on the validation log loss. Re-running on the same workdir resumes.

Frozen parameters are excluded from differentiation (`stop_gradient`), get no optimizer
state (`optax.multi_transform` with `set_to_zero`) and are carried over untouched, so
they stay bit-for-bit equal to where they started.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

from llmjax import config_util
from llmjax.data import arena
from llmjax.models import pair_classifier as pc
from llmjax.models.build_classifier import build_model, check_lengths
from llmjax.parallel import mesh as mesh_lib
from llmjax.train import checkpoint as ckpt_lib
from llmjax.train import classify_metrics
from llmjax.train import loop as lm_loop
from llmjax.train import metrics as metrics_lib
from llmjax.train import optimizer as optim_lib

SIDES = ("a", "b")
REPORT_FILE = "eval_report.json"


@dataclasses.dataclass
class ClassifyResult:
  workdir: pathlib.Path
  step: int
  final_train_loss: float | None
  best_val_loss: float | None
  report: dict | None  # classify_metrics.evaluate() of the best evaluation.
  stopped_early: bool
  interrupted: bool
  num_params: int
  num_trainable: int


def make_optimizer(optim_cfg, steps: int, mask) -> optax.GradientTransformation:
  """AdamW (with clipping, warmup + cosine) on trainable leaves; frozen leaves get zeros."""
  labels = jax.tree.map(lambda t: "train" if t else "freeze", mask)
  return optax.multi_transform({"train": optim_lib.make_optimizer(optim_cfg, steps),
                                "freeze": optax.set_to_zero()}, labels)


def _sides(batch):
  return [{"ids": batch[f"ids_{s}"], "mask": batch[f"mask_{s}"], "types": batch[f"types_{s}"]}
          for s in SIDES]


def make_train_step(graphdef, tx, mask, schedule, *, dropout: bool, seed: int):
  """step(state, batch) -> (state, metrics); `mask` (Python bools) marks trainable leaves."""
  base_key = jax.random.key(seed + 1)

  def loss_fn(params, batch, key):
    params = jax.tree.map(lambda p, t: p if t else jax.lax.stop_gradient(p), params, mask)
    model = nnx.merge(graphdef, params)
    a, b = _sides(batch)
    logits_Bx3 = model(a, b, rngs=nnx.Rngs(dropout=key) if dropout else None)
    logp_Bx3 = jax.nn.log_softmax(logits_Bx3)
    nll_B = -jnp.take_along_axis(logp_Bx3, batch["labels"][:, None], axis=-1)[:, 0]
    correct_B = jnp.argmax(logits_Bx3, -1) == batch["labels"]
    return nll_B.mean(), correct_B.mean()

  def train_step(state, batch):
    key = jax.random.fold_in(base_key, state["step"])
    (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch, key)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = jax.tree.map(lambda p, u, t: (p + u).astype(p.dtype) if t else p,
                          state["params"], updates, mask)
    metrics = {"train_loss": loss, "train_accuracy": acc, "grad_norm": optax.tree.norm(grads),
               "lr": schedule(state["step"])}
    return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

  return train_step


def make_eval_step(graphdef, both_orders: bool):
  def eval_step(params, batch):
    model = nnx.merge(graphdef, params)
    return pc.predict_probs(model, *_sides(batch), both_orders=both_orders)
  return eval_step


def swap_sides(batch: dict[str, np.ndarray], swap_B: np.ndarray) -> dict[str, np.ndarray]:
  """Exchanges A and B (and relabels) in the rows where swap_B is True."""
  out = dict(batch)
  for name in ("ids", "mask", "types"):
    a, b = batch[f"{name}_a"], batch[f"{name}_b"]
    out[f"{name}_a"] = np.where(swap_B[:, None], b, a)
    out[f"{name}_b"] = np.where(swap_B[:, None], a, b)
  out["labels"] = np.where(swap_B, np.asarray(pc.SWAP_CLASSES)[batch["labels"]], batch["labels"])
  return out


def _take(arrays: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
  return {k: v[rows] for k, v in arrays.items()}


def _global(batch: dict[str, np.ndarray], sharding) -> dict[str, jax.Array]:
  n_proc, proc = jax.process_count(), jax.process_index()
  return {k: jax.make_array_from_process_local_data(sharding, np.split(v, n_proc)[proc])
          for k, v in batch.items()}


def predict(eval_step, params, arrays, batch_size: int, sharding) -> np.ndarray:
  """Nx3 probabilities for every row of `arrays`, in fixed-size (padded) batches."""
  n = len(arrays["labels"])
  out = []
  for start in range(0, n, batch_size):
    rows = np.arange(start, start + batch_size)
    rows = np.where(rows < n, rows, 0)  # Pad the last batch with row 0; dropped below.
    probs = eval_step(params, _global(_take(arrays, rows), sharding))
    out.append(np.asarray(jax.device_get(probs))[:min(batch_size, n - start)])
  return np.concatenate(out)


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> ClassifyResult:
  config_util.validate(config)
  workdir = pathlib.Path(workdir).absolute()
  with lm_loop.workdir_lock(workdir), lm_loop.StopSignal() as stop:
    return _train(config, workdir, stop)


def _train(config, workdir: pathlib.Path, stop) -> ClassifyResult:
  cc, ac, tc = config.classifier, config.arena, config.train
  is_chief = jax.process_index() == 0
  if tc.grad_accum != 1:
    raise config_util.ConfigError(f"train.grad_accum={tc.grad_accum}: the classify job does not "
                                  "accumulate gradients; set it to 1 and lower train.batch_size.")
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=tc.keep_checkpoints)
  resuming = checkpointer.latest_step() is not None
  if is_chief:
    lm_loop.write_config(workdir, config, resuming)

  model, tokenizer = build_model(cc, tc.seed)
  check_lengths(model.encoder.cfg, tokenizer, ac)
  examples, report = arena.load_examples(ac.source, ac.path, ac.split, max_rows=ac.max_rows,
                                         synthetic_n=ac.synthetic_rows, seed=tc.seed)
  if is_chief:
    print(report, flush=True)
  arrays = arena.encode_pairs(examples, tokenizer, prompt_max_tokens=ac.prompt_max_tokens,
                              response_max_tokens=ac.response_max_tokens,
                              pad_id=model.encoder.cfg.pad_token_id,
                              show_progress=is_chief and len(examples) > 5000)
  train_rows, val_rows = arena.split_indices(len(examples), ac.val_fraction, tc.seed)
  train_arrays, val_arrays = _take(arrays, train_rows), _take(arrays, val_rows)
  if tc.eval_batches:
    val_arrays = _take(val_arrays, np.arange(min(len(val_rows), tc.eval_batches * tc.batch_size)))

  mesh = mesh_lib.make_mesh(config.mesh)
  batch_axes = mesh.shape["data"] * mesh.shape["fsdp"]
  if tc.batch_size % batch_axes:
    raise config_util.ConfigError(f"train.batch_size={tc.batch_size} must be divisible by the "
                                  f"{batch_axes} devices on the data x fsdp mesh axes.")
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))

  graphdef, state = nnx.split(model)
  params = nnx.to_pure_dict(state)
  mask = pc.trainable_mask(params, cc.freeze, cc.frozen_layers,
                           model.encoder.cfg.num_stored_layers)
  schedule = optim_lib.learning_rate_schedule(config.optim, tc.steps)
  tx = make_optimizer(config.optim, tc.steps, mask)

  def init_fn(p):
    return {"params": p, "opt_state": tx.init(p), "step": jnp.zeros((), jnp.int32)}

  abstract_state = jax.eval_shape(init_fn, params)
  state_shardings = jax.tree.map(lambda _: replicated, abstract_state)
  train_iter = (grain.MapDataset.range(len(train_rows)).shuffle(seed=tc.seed).repeat()
                .batch(tc.batch_size, drop_remainder=True).to_iter_dataset())
  train_iter = iter(train_iter)
  restored = None
  if resuming:
    restored = checkpointer.restore_latest(
        ckpt_lib.abstract_like(abstract_state, state_shardings), train_iter)
  if restored is None:
    state = jax.jit(init_fn, out_shardings=state_shardings)(params)
    start_step, meta, resuming = 0, {}, False
  else:
    start_step, state, meta = restored
  enc_cfg = model.encoder.cfg
  dropout = cc.head_dropout > 0 or enc_cfg.hidden_dropout > 0 or enc_cfg.attention_dropout > 0
  del params, model

  num_params = lm_loop.count_params(state["params"])
  num_trainable = int(sum(np.prod(p.shape) for p, t in zip(
      jax.tree.leaves(state["params"]), jax.tree.leaves(mask)) if t))
  if is_chief:
    print(f"llmjax: {config.name} | {num_params / 1e6:.2f}M parameters, "
          f"{num_trainable / 1e6:.2f}M trainable ({cc.freeze}) | sequences of "
          f"{arrays['ids_a'].shape[1]} tokens | {len(train_rows):,} train / {len(val_rows):,} "
          f"val pairs | mesh {dict(mesh.shape)}" +
          (f" | resuming from step {start_step}" if resuming else ""), flush=True)

  train_step = jax.jit(make_train_step(graphdef, tx, mask, schedule, dropout=dropout,
                                       seed=tc.seed),
                       in_shardings=(state_shardings, batch_sharding),
                       out_shardings=(state_shardings, replicated), donate_argnums=0)
  eval_step = jax.jit(make_eval_step(graphdef, cc.both_orders),
                      in_shardings=(state_shardings["params"], batch_sharding),
                      out_shardings=replicated)
  eval_batch = max(tc.batch_size, batch_axes)

  writer = metrics_lib.MetricsWriter(workdir, resume_step=start_step if resuming else None,
                                     enabled=is_chief)
  best_val = meta.get("best_val_loss")
  best_report, best_step = meta.get("best_report"), meta.get("best_step")
  evals_without_improvement = meta.get("evals_without_improvement", 0)
  last_metrics, stopped_early, interrupted = None, False, None
  bar = tqdm(total=tc.steps, initial=start_step, disable=not is_chief, unit="step",
             dynamic_ncols=True, desc=config.name)
  step, t_last = start_step, time.perf_counter()
  try:
    while step < tc.steps:
      rows = next(train_iter)
      batch = _take(train_arrays, rows)
      if cc.swap_augment:
        batch = swap_sides(batch, np.random.default_rng([tc.seed, step]).random(len(rows)) < 0.5)
      state, device_metrics = train_step(state, _global(batch, batch_sharding))
      step += 1
      bar.update(1)
      if step % max(tc.log_every, 1) == 0 or step == tc.steps:
        last_metrics = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
        if not math.isfinite(last_metrics["train_loss"]):
          raise lm_loop.TrainingError(
              f"Loss became {last_metrics['train_loss']} at step {step}; the last good "
              f"checkpoint (step {checkpointer.latest_step()}) is intact. Lower "
              "optim.learning_rate, then re-run to resume from it.")
        now = time.perf_counter()
        writer.write({"step": step, **last_metrics,
                      "pairs_per_s": tc.log_every * tc.batch_size / max(now - t_last, 1e-9)})
        t_last = now
        bar.set_postfix(loss=f"{last_metrics['train_loss']:.3f}", refresh=False)

      is_eval = (tc.eval_every and step % tc.eval_every == 0) or step == tc.steps
      if is_eval:
        probs = predict(eval_step, state["params"], val_arrays, eval_batch, batch_sharding)
        result = classify_metrics.evaluate(probs, val_arrays["labels"], train_arrays["labels"])
        if best_val is None or result["log_loss"] < best_val:
          best_val, best_report, best_step = result["log_loss"], result, step
          evals_without_improvement = 0
          checkpointer.save_best(step, state["params"], {"step": step, "report": result})
        else:
          evals_without_improvement += 1
        writer.write({"step": step, "val_loss": result["log_loss"],
                      "val_accuracy": result["accuracy"]})
        if is_chief:
          bar.write(f"step {step}: val log loss {result['log_loss']:.4f}, accuracy "
                    f"{result['accuracy']:.4f} (best log loss {best_val:.4f}; uniform "
                    f"{math.log(3):.4f})")
        if tc.patience and evals_without_improvement >= tc.patience:
          stopped_early = True
          bar.write(f"Early stop at step {step}: no improvement in {tc.patience} evaluations.")
      is_save = (tc.checkpoint_every and step % tc.checkpoint_every == 0) or step == tc.steps
      if is_save or stopped_early or stop.received:
        checkpointer.save(step, state, train_iter, {
            "step": step, "best_val_loss": best_val, "best_report": best_report,
            "best_step": best_step,
            "evals_without_improvement": evals_without_improvement, "config_name": config.name})
      if stop.received:
        interrupted = stop.received
        bar.write(f"Received {interrupted}: saved checkpoint {step}; re-run to resume.")
        break
      if stopped_early:
        break
  finally:
    bar.close()
    writer.close()
    checkpointer.close()

  if best_report is not None and is_chief:
    (workdir / REPORT_FILE).write_text(json.dumps(best_report, indent=2) + "\n")
    order = "A/B and B/A averaged" if cc.both_orders else "A/B order only"
    print(f"Best evaluation (step {best_step}, {order}), report in {workdir / REPORT_FILE}:\n"
          + classify_metrics.format_report(best_report), flush=True)
  return ClassifyResult(workdir=workdir, step=step,
                        final_train_loss=last_metrics and last_metrics["train_loss"],
                        best_val_loss=best_val, report=best_report, stopped_early=stopped_early,
                        interrupted=interrupted is not None, num_params=num_params,
                        num_trainable=num_trainable)

