"""The arena pair classifier job (`config.job = 'classify'`), run by `llmjax.train.runner`.

Loads and encodes the arena rows, builds encoder + head (a pretrained checkpoint or a
scratch encoder), trains with AdamW where the freezing mode decides through the optimizer's
trainable mask which parameters move, and evaluates (accuracy, log loss, confusion matrix
against the majority-class and uniform baselines). The validation log loss picks the best
parameters and drives patience.

Frozen parameters are excluded from differentiation (`stop_gradient`), get no optimizer
state and are carried over untouched, so they stay bit-for-bit equal to where they started.
"""

from __future__ import annotations

import dataclasses
import pathlib

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from llmjax.data import arena
from llmjax.models import pair_classifier as pc
from llmjax.parallel import mesh as mesh_lib
from llmjax.runs import checkpoint as ckpt_lib
from llmjax.train import classify_metrics, runner
from llmjax.train import metrics as metrics_lib
from llmjax.train import optimizer as optim_lib
from llmjax.train import step as step_lib
from llmjax.train.build_classifier import build_model, check_lengths
from llmjax.train.shape import pair_shape
from llmjax.train.task import RunResult, Task
from llmjax.util import fileio

SIDES = ("a", "b")
REPORT_FILE = "eval_report.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClassifyResult(RunResult):
  """A classifier run's result: the run's figures plus the report of the best parameters."""

  num_trainable: int  # Parameters the freezing mode lets train.
  steps_per_epoch: int
  report: dict | None  # classify_metrics.evaluate of the reported split (None: never evaluated).
  report_split: str  # test, or validation when the config holds no test split.


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, **kw) -> ClassifyResult:
  return runner.run(config, workdir, ClassifyTask, **kw)


def sides(batch):
  return [
    {"ids": batch[f"ids_{s}"], "mask": batch[f"mask_{s}"], "types": batch[f"types_{s}"]}
    for s in SIDES
  ]


def classify_loss(graphdef, mask, *, dropout: bool):
  """loss(params, batch, key) -> (mean NLL of the labels, {'train_accuracy'})."""

  def loss_fn(params, batch, key):
    params = jax.tree.map(lambda p, t: p if t else jax.lax.stop_gradient(p), params, mask)
    model = nnx.merge(graphdef, params)
    logits_Bx3 = model(*sides(batch), rngs=nnx.Rngs(dropout=key) if dropout else None)
    logp_Bx3 = jax.nn.log_softmax(logits_Bx3)
    nll_B = -jnp.take_along_axis(logp_Bx3, batch["labels"][:, None], axis=-1)[:, 0]
    correct_B = jnp.argmax(logits_Bx3, -1) == batch["labels"]
    return nll_B.mean(), {"train_accuracy": correct_B.mean()}

  return loss_fn


def make_eval_step(graphdef, both_orders: bool):
  def eval_step(params, batch):
    model = nnx.merge(graphdef, params)
    return pc.predict_probs(model, *sides(batch), both_orders=both_orders)

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


def take(arrays: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
  return {k: v[rows] for k, v in arrays.items()}


def to_global(batch: dict[str, np.ndarray], sharding, axis: int = 0) -> dict[str, jax.Array]:
  """Global arrays from the full host batch: each process passes its share of `axis`."""
  n_proc, proc = jax.process_count(), jax.process_index()
  return {
    k: jax.make_array_from_process_local_data(sharding, np.split(v, n_proc, axis=axis)[proc])
    for k, v in batch.items()
  }


def predict(eval_step, params, arrays, batch_size: int, sharding) -> np.ndarray:
  """Nx3 probabilities for every row of `arrays`, in fixed-size (padded) batches."""
  n = len(arrays["labels"])
  out = []
  for start in range(0, n, batch_size):
    rows = np.arange(start, start + batch_size)
    rows = np.where(rows < n, rows, 0)  # Pad the last batch with row 0; dropped below.
    probs = eval_step(params, to_global(take(arrays, rows), sharding))
    out.append(np.asarray(jax.device_get(probs))[: min(batch_size, n - start)])
  return np.concatenate(out)


class ClassifyTask(Task):
  """Pairs (prompt + answer A, prompt + answer B) -> A wins / B wins / tie."""

  result_type = ClassifyResult
  reference = "uniform log loss 1.0986"

  def setup(self):
    config, cc, ac, tc = self.config, self.config.classifier, self.config.arena, self.config.train
    chief = jax.process_index() == 0
    model, tokenizer = build_model(cc, tc.seed)
    check_lengths(model.encoder.cfg, tokenizer, ac)
    splits = arena.prepare_splits(
      ac,
      tokenizer,
      model.encoder.cfg.pad_token_id,
      tc.seed,
      show_progress=chief and ac.max_rows > 5000,
    )
    if chief:
      print(f"{splits.report} | {splits.summary()}", flush=True)
    self.train_arrays, self.test_arrays = splits.train, splits.test
    n_train, n_val = len(splits.rows["train"]), len(splits.rows["val"])
    self.val_arrays = splits.val
    if tc.eval_batches:
      self.val_arrays = take(
        self.val_arrays, np.arange(min(n_val, tc.eval_batches * tc.batch_size))
      )
    mesh = mesh_lib.make_mesh(config.mesh)
    # With arena.epochs the run's length and evaluations follow the epochs (shape.steps).
    self.shape = shape = pair_shape(config, n_train, mesh.shape["data"] * mesh.shape["fsdp"])
    replicated = NamedSharding(mesh, P())
    self.batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
    self.step_sharding = NamedSharding(mesh, P(None, ("data", "fsdp")))

    graphdef, state = nnx.split(model)
    self.params = nnx.to_pure_dict(state)
    mask = pc.trainable_mask(
      self.params, cc.freeze, cc.frozen_layers, model.encoder.cfg.num_stored_layers
    )
    schedule = optim_lib.learning_rate_schedule(config.optim, shape.steps)
    tx = optim_lib.make_optimizer(config.optim, shape.steps, mask)
    self.abstract = jax.eval_shape(lambda p: step_lib.init_state(p, tx), self.params)
    self.state_shardings = jax.tree.map(lambda _: replicated, self.abstract)
    self.init_fn = jax.jit(lambda p: step_lib.init_state(p, tx), out_shardings=self.state_shardings)
    self.train_iter = iter(
      grain.MapDataset.range(n_train)
      .shuffle(seed=tc.seed)
      .repeat()
      .batch(shape.batch, drop_remainder=True)
      .to_iter_dataset()
    )
    enc_cfg = model.encoder.cfg
    dropout = cc.head_dropout > 0 or enc_cfg.hidden_dropout > 0 or enc_cfg.attention_dropout > 0
    loss_fn = classify_loss(graphdef, mask, dropout=dropout)
    self.step = jax.jit(
      step_lib.make_train_step(loss_fn, tx, schedule, seed=tc.seed, trainable=mask),
      in_shardings=(self.state_shardings, self.step_sharding),
      out_shardings=(self.state_shardings, replicated),
      donate_argnums=0,
    )
    self.eval_step = jax.jit(
      make_eval_step(graphdef, cc.both_orders),
      in_shardings=(self.state_shardings["params"], self.batch_sharding),
      out_shardings=replicated,
    )
    self.num_trainable = int(
      sum(
        np.prod(p.shape) for p, t in zip(jax.tree.leaves(self.params), jax.tree.leaves(mask)) if t
      )
    )
    self.facts = {
      "num_trainable": self.num_trainable,
      "freeze": cc.freeze,
      "sequence_tokens": int(self.train_arrays["ids_a"].shape[1]),
      "n_train_pairs": n_train,
      "n_val_pairs": n_val,
      "n_test_pairs": len(splits.rows["test"]),
      "steps_per_epoch": shape.steps_per_epoch,
    }
    self.mesh = mesh
    return self.facts

  def startup_line(self, num_params, start_step):
    f = self.facts
    return (
      f"llmjax: {self.config.name} | {num_params / 1e6:.2f}M parameters, "
      f"{self.num_trainable / 1e6:.2f}M trainable ({f['freeze']}) | sequences of "
      f"{f['sequence_tokens']} tokens | {f['n_train_pairs']:,} train / "
      f"{f['n_val_pairs']:,} val / {f['n_test_pairs']:,} test pairs | mesh "
      f"{dict(self.mesh.shape)}"
    )

  def abstract_state(self, step):
    return ckpt_lib.abstract_like(self.abstract, self.state_shardings)

  def init_state(self):
    state = self.init_fn(self.params)
    del self.params  # The state owns the weights now.
    return state

  def restored(self, step, state):
    del self.params

  def device_batch(self, rows, step):
    batch = take(self.train_arrays, rows)
    if self.config.classifier.swap_augment:
      swap_B = np.random.default_rng([self.config.train.seed, step]).random(len(rows)) < 0.5
      batch = swap_sides(batch, swap_B)
    accum = self.shape.grad_accum
    batch = {k: v.reshape((accum, v.shape[0] // accum) + v.shape[1:]) for k, v in batch.items()}
    return to_global(batch, self.step_sharding, axis=1)

  def train_step(self, step):
    return self.step

  def report(self, params, arrays) -> dict:
    probs = predict(self.eval_step, params, arrays, self.shape.eval_batch, self.batch_sharding)
    return classify_metrics.evaluate(
      probs, arrays["labels"], self.train_arrays["labels"], interval_seed=self.config.train.seed
    )

  def evaluate(self, params):
    result = self.report(params, self.val_arrays)
    return {"val_loss": result["log_loss"], "val_accuracy": result["accuracy"], "report": result}

  def test(self, params):
    """Test figures of the best-on-validation parameters (what a study reports)."""
    if not len(self.test_arrays["labels"]):
      return None
    result = self.report(params, self.test_arrays)
    return {
      "test_loss": result["log_loss"],
      "test_accuracy": result["accuracy"],
      "test_report": result,
    }

  def finish(self, state, interrupted, best_eval, test):
    report = (test or {}).get("test_report") or (best_eval and best_eval["report"])
    if report is not None and jax.process_index() == 0:
      fileio.atomic_write_json(self.workdir / REPORT_FILE, report)
      order = "A/B and B/A averaged" if self.config.classifier.both_orders else "A/B order only"
      split = "test" if test else "validation"
      print(
        f"Best-on-validation parameters, {split} split ({order}), report in "
        f"{self.workdir / REPORT_FILE}:\n" + classify_metrics.format_report(report),
        flush=True,
      )
    return {
      "report": report,
      "report_split": "test" if test else "validation",
      "artifacts": [REPORT_FILE] if report is not None else [],
    }


def train_for_set(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """One run of an arena experiment set (`llmjax.experiments.arena_sets.run_set`): trains
  it and returns the figures its table reports (test split, best-on-validation weights)."""
  result = train(config, workdir)
  report = result.report or {}
  steps_per_epoch = result.steps_per_epoch
  rates = [
    r["pairs_per_s"]
    for r in metrics_lib.read_metrics(workdir)
    if r.get("pairs_per_s") and r["step"] > steps_per_epoch
  ]  # Compiling epoch left out.
  rate = float(np.median(rates)) if rates else float("nan")
  return {
    "params": result.num_params,
    "trainable_params": result.num_trainable,
    "accuracy": report.get("accuracy"),
    "accuracy_ci95": report.get("accuracy_ci95"),
    "log_loss": report.get("log_loss"),
    "seconds_per_epoch": steps_per_epoch * config.train.batch_size / rate,
    "confusion": report.get("confusion"),
    "examples": report.get("examples"),
  }
