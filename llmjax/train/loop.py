"""The training loop: data, sharded init or resume, jitted steps, eval, checkpoints, logs.

`train(config, workdir)` is what `python -m llmjax.main` and `llmjax.Trainer` run.
Running it again on the same workdir resumes from the newest checkpoint, bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import os
import pathlib
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm import tqdm

from llmjax import config_util
from llmjax import errors
from llmjax import data as data_lib
from llmjax import models
from llmjax import track as track_lib
from llmjax.data import pipeline
from llmjax.data import shards
from llmjax.data import tokenizer as tokenizer_lib
from llmjax.parallel import mesh as mesh_lib
from llmjax.pretrained import init_from
from llmjax.train import checkpoint as ckpt_lib
from llmjax.train import metrics as metrics_lib
from llmjax.train import optimizer as optim_lib
from llmjax.train import step as step_lib

log = logging.getLogger(__name__)


TrainingError = errors.TrainingError


@dataclasses.dataclass
class TrainResult:
  workdir: pathlib.Path
  step: int
  final_train_loss: float | None
  best_val_loss: float | None
  final_val_loss: float | None
  stopped_early: bool
  interrupted: bool
  samples: list[str]
  num_params: int
  tokens_per_s: float
  unigram_entropy: float
  test_loss: float | None = None


@contextlib.contextmanager
def workdir_lock(workdir: pathlib.Path):
  """Refuses a second job on the same workdir (each process of a multi-host job locks its
  own file, so the processes of one job share the workdir)."""
  proc = jax.process_index()
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    handle = open(workdir / (".lock" if proc == 0 else f".lock.{proc}"), "w")
  except OSError as e:
    raise TrainingError(f"Workdir {workdir} is not writable ({e}). Pick another --workdir.")
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    raise TrainingError(f"Workdir {workdir} is in use by another running job; wait for it "
                        "or pick another --workdir.") from None
  try:
    yield
  finally:
    fcntl.flock(handle, fcntl.LOCK_UN)
    handle.close()


class StopSignal:
  """Turns SIGTERM/SIGINT into a flag the loop checks after each step."""

  def __init__(self):
    self.received = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread: signals stay as they were.
        pass
    return self

  def _handle(self, signum, frame):
    self.received = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def write_config(workdir: pathlib.Path, config: ml_collections.ConfigDict, resuming: bool):
  path = workdir / "config.json"
  if resuming and path.exists():
    config_util.check_resume_compatible(json.loads(path.read_text()), config)
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(config_util.to_json(config))
  os.replace(tmp, path)


def count_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def to_global_batch(batch: dict, grad_accum: int, sharding: NamedSharding) -> dict:
  """[b_local, T] host arrays -> global [A, B/A, T] arrays sharded over the batch axes."""
  def one(x):
    x = np.asarray(x)
    x = x.reshape((grad_accum, x.shape[0] // grad_accum) + x.shape[1:])
    return jax.make_array_from_process_local_data(sharding, x)
  return jax.tree.map(one, batch)


def evaluate(eval_step, params, batches, sharding) -> float:
  total, count = 0.0, 0
  for batch in batches:
    batch = jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
    t, c = eval_step(params, batch)
    total += float(t)
    count += int(c)
  return total / max(count, 1)


def check_finite(metrics: dict, step: int, checkpointer: ckpt_lib.Checkpointer) -> None:
  loss = metrics["train_loss"]
  if not math.isfinite(loss) or not math.isfinite(metrics["grad_norm"]):
    last = checkpointer.latest_step()
    raise TrainingError(
        f"Loss became {loss} (grad norm {metrics['grad_norm']}) at step {step}. Stopping; the "
        f"last good checkpoint (step {last}) is intact. Lower optim.learning_rate or raise "
        "optim.warmup_steps, then re-run to resume from it.")


class LaggedMetrics:
  """Train-step metrics fetched one step late, so the host never waits on the step it has
  just dispatched: checks them for NaN, logs every `log_every` steps through `write`, and
  keeps the throughput and the progress bar current."""

  def __init__(self, *, total_steps: int, log_every: int, tokens_per_step: int,
               checkpointer: ckpt_lib.Checkpointer, bar, write):
    self.total_steps, self.log_every = total_steps, max(log_every, 1)
    self.tokens_per_step, self.checkpointer = tokens_per_step, checkpointer
    self.bar, self.write = bar, write
    self.pending = None  # (step, device metrics) not fetched yet.
    self.last = None  # Host metrics of the newest fetched step.
    self.throughput = 0.0  # Train tokens/s over the last second or so.
    self.restart_clock()

  def restart_clock(self) -> None:
    """Starts a new throughput window (e.g. after a pause that was not training)."""
    self._t_last, self._since = time.perf_counter(), 0

  def dispatched(self, step: int, device_metrics: dict) -> None:
    """Step `step` was dispatched: fetches the previous step's metrics, queues these."""
    self.flush()
    self.pending = (step, device_metrics)
    self._since += 1
    now = time.perf_counter()
    if now - self._t_last > 1.0 or step == self.total_steps:
      self.throughput = self._since * self.tokens_per_step / (now - self._t_last)
      self.restart_clock()
      if self.last:
        self.bar.set_postfix(loss=f"{self.last['train_loss']:.3f}",
                             tok_s=f"{self.throughput:,.0f}", refresh=False)
    self.bar.update(1)

  def flush(self) -> None:
    """Waits for the queued step's metrics; raises TrainingError if they are not finite."""
    if self.pending is None:
      return
    step, device_metrics = self.pending
    self.pending = None
    host = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    check_finite(host, step, self.checkpointer)
    self.last = host
    if step % self.log_every == 0 or step == self.total_steps:
      self.write({"step": step, **host, "tokens_per_s": self.throughput,
                  "tokens": step * self.tokens_per_step})


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> TrainResult:
  config_util.validate(config)
  workdir = pathlib.Path(workdir).absolute()
  with workdir_lock(workdir), StopSignal() as stop:
    return _train(config, workdir, stop)


def training_mesh(config):
  """(mesh, devices on the batch axes, sequences per micro-batch), checked against each other."""
  try:
    mesh = mesh_lib.make_mesh(config.mesh)
  except ValueError as e:
    raise config_util.ConfigError(str(e)) from e
  batch_axes = mesh.shape["data"] * mesh.shape["fsdp"]
  micro = config.train.batch_size // config.train.grad_accum
  if micro % batch_axes:
    raise config_util.ConfigError(
        f"train.batch_size / train.grad_accum = {micro} sequences per micro-batch must be "
        f"divisible by the {batch_axes} devices on the data x fsdp mesh axes.")
  return mesh, batch_axes, micro


def _train(config, workdir: pathlib.Path, stop: StopSignal) -> TrainResult:
  config = init_from.resolve_model_config(config)  # model.init_from fixes the architecture.
  tc, mc = config.train, config.model
  is_chief = jax.process_index() == 0
  t_start = time.perf_counter()
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=tc.keep_checkpoints)
  resuming = checkpointer.latest_step() is not None
  if is_chief:
    write_config(workdir, config, resuming)

  # Data.
  tok = tokenizer_lib.get_tokenizer(config.data.tokenizer)
  if tok.vocab_size > mc.vocab_size:
    raise config_util.ConfigError(
        f"model.vocab_size={mc.vocab_size} is smaller than the tokenizer's vocabulary "
        f"({tok.vocab_size}); set --config.model.vocab_size={tok.vocab_size}.")
  splits, tok = data_lib.data_splits(config, workdir if is_chief else None)  # Notes-aware.
  mesh, batch_axes, micro = training_mesh(config)
  n_proc, proc = jax.process_count(), jax.process_index()
  train_iter = pipeline.train_iterator(
      splits.train, mc.block_size, tc.batch_size, tc.seed, shard_index=proc, shard_count=n_proc)
  eval_batch_size = max(batch_axes, micro)

  def local_eval_data(tokens, n_batches):
    data = pipeline.eval_batches(tokens, mc.block_size, eval_batch_size, n_batches)
    return [{k: np.split(np.asarray(v), n_proc)[proc] for k, v in b.items()} for b in data]

  eval_data = local_eval_data(splits.val, tc.eval_batches)

  # Model, optimizer, sharded state and compiled steps.
  steps = build_steps(config, mesh)
  graphdef, abstract_state = steps.graphdef, steps.abstract_state
  restored = None
  if resuming:
    restored = checkpointer.restore_latest(
        ckpt_lib.abstract_like(abstract_state, steps.state_shardings), train_iter)
  if restored is None:
    state = steps.init()
    start_step, meta, resuming = 0, {}, False
  else:
    start_step, state, meta = restored
    _check_restored_shapes(state, abstract_state)

  num_params = count_params(state["params"])
  entropy = metrics_lib.unigram_entropy(splits.val)
  elapsed_before = float(meta.get("elapsed_s", 0.0))

  def elapsed() -> float:
    return elapsed_before + time.perf_counter() - t_start

  summary = {"name": config.name, "status": "running", "num_params": num_params,
             "unigram_entropy": entropy, "n_train_tokens": len(splits.train),
             "n_val_tokens": len(splits.val),
             "bytes_per_token": metrics_lib.bytes_per_token(splits.val, tok)}
  if is_chief:
    print(f"llmjax: {config.name} | {num_params / 1e6:.2f}M parameters | mesh "
          f"{dict(mesh.shape)} | {len(splits.train):,} train / {len(splits.val):,} val tokens | "
          f"val unigram entropy {entropy:.3f} nats" +
          (f" | resuming from step {start_step}" if resuming else ""), flush=True)
    metrics_lib.write_summary(workdir, summary)
  tracker = track_lib.make_tracker(config, workdir, enabled=is_chief)
  tracker.log_params(config)
  tracker.log_artifact(workdir / "config.json")

  batch_sharding, eval_sharding = steps.batch_sharding, steps.eval_sharding
  train_step, eval_step = steps.train_step, steps.eval_step

  writer = metrics_lib.MetricsWriter(workdir, resume_step=start_step if resuming else None,
                                     enabled=is_chief)
  hash_log = metrics_lib.MetricsWriter(workdir, resume_step=start_step if resuming else None,
                                       enabled=is_chief and tc.log_batch_hashes,
                                       filename="batch_hashes.jsonl")
  best_val = meta.get("best_val_loss")
  evals_without_improvement = meta.get("evals_without_improvement", 0)
  tokens_per_step = tc.batch_size * mc.block_size
  last_val, stopped_early, interrupted = None, False, None

  def meta_now(step):
    return {"step": step, "best_val_loss": best_val, "elapsed_s": elapsed(),
            "evals_without_improvement": evals_without_improvement, "config_name": config.name}

  def log_record(record):
    record["elapsed_s"] = round(elapsed(), 3)
    writer.write(record)
    tracker.log_metrics(record, record["step"])

  bar = tqdm(total=tc.steps, initial=start_step, disable=not is_chief, unit="step",
             dynamic_ncols=True, desc=config.name)
  say = bar.write if is_chief else lambda _: None  # Only process 0 prints.
  lagged = LaggedMetrics(total_steps=tc.steps, log_every=tc.log_every,
                         tokens_per_step=tokens_per_step, checkpointer=checkpointer, bar=bar,
                         write=log_record)
  step = start_step
  status = "FAILED"
  try:
    while step < tc.steps:
      host_batch = next(train_iter)
      if tc.log_batch_hashes:
        hash_log.write({"step": step + 1, "hash": batch_hash(host_batch)})
      batch = to_global_batch(host_batch, tc.grad_accum, batch_sharding)
      if step + 1 == tc.debug_nan_step:
        state = poison_params(state)
      state, device_metrics = train_step(state, batch)
      step += 1
      lagged.dispatched(step, device_metrics)

      is_eval = (tc.eval_every and step % tc.eval_every == 0) or step == tc.steps
      is_save = (tc.checkpoint_every and step % tc.checkpoint_every == 0) or step == tc.steps
      if is_eval or is_save or stop.received:
        lagged.flush()  # Never evaluate or save a state whose loss was not finite.
      if is_eval:
        last_val = evaluate(eval_step, state["params"], eval_data, eval_sharding)
        improved = best_val is None or last_val < best_val
        if improved:
          best_val, evals_without_improvement = last_val, 0
          checkpointer.save_best(step, state["params"], {"step": step, "val_loss": last_val})
        else:
          evals_without_improvement += 1
        log_record({"step": step, "val_loss": last_val,
                    "val_perplexity": metrics_lib.perplexity(last_val),
                    "tokens": step * tokens_per_step})
        say(f"step {step}: val loss {last_val:.4f} (best {best_val:.4f}, unigram "
            f"entropy {entropy:.3f})")
        if tc.patience and evals_without_improvement >= tc.patience:
          stopped_early = True
          say(f"Early stop at step {step}: no improvement in {tc.patience} evaluations.")
      if is_save or stopped_early or stop.received:
        checkpointer.save(step, state, train_iter, meta_now(step))
      if stop.received:
        interrupted = stop.received
        say(f"Received {interrupted}: saved checkpoint {step}; re-run the same command "
            "to resume.")
        break
      if stopped_early:
        break
    lagged.flush()
    status = "KILLED" if interrupted else "FINISHED"
  finally:
    bar.close()
    writer.close()
    hash_log.close()
    checkpointer.close()
    if status == "FAILED":
      if is_chief:
        metrics_lib.write_summary(workdir, {**summary, "status": "failed", "steps": step,
                                            "elapsed_s": elapsed()})
      tracker.close("FAILED")

  try:
    test_tokens = shards.optional_split(splits, "test")
    if test_tokens is not None and not interrupted:
      params = state["params"]
      if best_val is not None:
        params, _ = ckpt_lib.restore_params(workdir, ckpt_lib.abstract_like(
            abstract_state["params"], steps.state_shardings["params"]), "best")
      n_batches = -(-len(test_tokens) // (eval_batch_size * mc.block_size))
      test_loss = evaluate(eval_step, params, local_eval_data(test_tokens, n_batches),
                           eval_sharding)
      summary.update(test_loss=test_loss, test_perplexity=metrics_lib.perplexity(test_loss),
                     test_bits_per_byte=metrics_lib.bits_per_byte(
                         test_loss, metrics_lib.bytes_per_token(test_tokens, tok)))
      if is_chief:
        print(f"test loss {test_loss:.4f}, perplexity {summary['test_perplexity']:.2f} "
              f"({len(test_tokens):,} tokens, best-validation parameters)", flush=True)
    samples = []
    if tc.sample_tokens > 0 and not interrupted:
      samples = sample_after_training(graphdef, state["params"], tok, tc)
      if is_chief:
        (workdir / "samples.txt").write_text("\n\n".join(samples) + "\n")
        tracker.log_artifact(workdir / "samples.txt")
    if is_chief:
      summary.update(
          status=("interrupted" if interrupted else "stopped_early" if stopped_early else
                  "finished"), steps=step, tokens=step * tokens_per_step,
          final_train_loss=lagged.last and lagged.last["train_loss"],
          best_val_loss=best_val, final_val_loss=last_val, elapsed_s=elapsed())
      tracker.log_artifact(metrics_lib.write_summary(workdir, summary))
      _log_report(tracker, workdir)
  except BaseException:
    status = "FAILED"
    raise
  finally:
    tracker.close(status)
  return TrainResult(workdir=workdir, step=step,
                     final_train_loss=lagged.last and lagged.last["train_loss"],
                     best_val_loss=best_val, final_val_loss=last_val, stopped_early=stopped_early,
                     interrupted=interrupted is not None, samples=samples, num_params=num_params,
                     tokens_per_s=lagged.throughput, unigram_entropy=entropy,
                     test_loss=summary.get("test_loss"))


def _log_report(tracker: track_lib.Tracker, workdir: pathlib.Path) -> None:
  """Writes this run's report and plots to DIR/report and logs them (MLflow runs only)."""
  if not tracker.active:
    return
  from llmjax import report  # pylint: disable=import-outside-toplevel
  try:
    tracker.log_artifact(report.write_report([workdir], workdir / "report"), "report")
  except Exception as e:  # noqa: BLE001 - a plotting problem must not fail a finished run.
    log.warning("Could not write the report of %s: %s: %s", workdir, type(e).__name__, e)


@dataclasses.dataclass(frozen=True)
class Steps:
  """Everything needed to train a config on a mesh; shared with `benchmarks/`."""
  mesh: jax.sharding.Mesh
  graphdef: Any  # The model's nnx.GraphDef (rebuilt inside the steps).
  abstract_state: Any  # Train state of ShapeDtypeStructs (no sharding).
  state_shardings: Any  # NamedShardings matching the train state.
  init: Any  # () -> train state, initialised directly into its shardings.
  train_step: Any  # (state, batch [A, B/A, T]) -> (state, metrics); donates the state.
  eval_step: Any  # (params, batch [B, T]) -> (sum of token losses, token count).
  batch_sharding: NamedSharding  # Train batches [A, B/A, T]: B over data x fsdp.
  eval_sharding: NamedSharding  # Eval batches [B, T].


def build_steps(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Steps:
  """Builds the sharded init and the jitted train/eval steps for `config` on `mesh`."""
  tc, mc = config.train, config.model
  graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: models.build(mc, tc.seed)))
  param_shardings = mesh_lib.param_shardings(abstract_params, mesh)
  schedule = optim_lib.learning_rate_schedule(config.optim, tc.steps)
  tx = optim_lib.make_optimizer(config.optim, tc.steps)

  def init_fn(params=None):  # params: pretrained weights, or None for a random init.
    if params is None:
      params = nnx.to_pure_dict(nnx.state(models.build(mc, tc.seed)))
    params = jax.tree.map(jax.lax.with_sharding_constraint, params, param_shardings)
    return step_lib.init_state(params, tx)

  def init():  # model.init_from: start from a checkpoint's weights (None = scratch).
    jitted = jax.jit(init_fn, out_shardings=state_shardings, donate_argnums=0)
    return jitted(init_from.pretrained_params(mc, param_shardings))

  abstract_state = jax.eval_shape(init_fn)
  state_shardings = state_shardings_for(abstract_state, param_shardings, mesh)
  batch_sharding = NamedSharding(mesh, P(None, ("data", "fsdp")))
  eval_sharding = mesh_lib.batch_sharding(mesh)
  step_fn = step_lib.make_train_step(graphdef, tx, schedule, seed=tc.seed,
                                     dropout=float(mc.get("dropout", 0.0)))
  train_step = jax.jit(mesh_lib.traced_under(mesh, step_fn),
                       in_shardings=(state_shardings, batch_sharding),
                       out_shardings=(state_shardings, mesh_lib.replicated(mesh)),
                       donate_argnums=0)
  eval_step = jax.jit(mesh_lib.traced_under(mesh, step_lib.make_eval_step(graphdef)),
                      in_shardings=(state_shardings["params"], eval_sharding))
  return Steps(mesh=mesh, graphdef=graphdef, abstract_state=abstract_state,
               state_shardings=state_shardings,
               init=init, train_step=train_step,
               eval_step=eval_step, batch_sharding=batch_sharding, eval_sharding=eval_sharding)


def batch_hash(batch: dict) -> str:
  """A short digest of a host batch's token ids (for the `train.log_batch_hashes` log)."""
  digest = hashlib.blake2b(digest_size=8)
  for key in sorted(batch):
    digest.update(np.ascontiguousarray(batch[key]).tobytes())
  return digest.hexdigest()


def poison_params(state):
  """`train.debug_nan_step`: NaN parameters, so the step's loss and update are NaN."""
  params = jax.tree.map(lambda x: x * jnp.nan, state["params"])
  return {**state, "params": params}


def state_shardings_for(abstract_state, param_shardings, mesh):
  """Shardings of the whole train state: optimizer leaves that mirror a parameter (Adam's
  moments) take that parameter's sharding; everything else (counts, step) is replicated."""
  by_path = {tuple(str(k) for k in path): s for path, s in
             jax.tree_util.tree_flatten_with_path(param_shardings)[0]}

  def one(path, leaf):
    keys = tuple(str(k) for k in path)
    for start in range(len(keys)):
      match = by_path.get(keys[start:])
      if match is not None and len(match.spec) <= len(leaf.shape):
        return match
    return NamedSharding(mesh, P())

  shardings = jax.tree_util.tree_map_with_path(one, abstract_state)
  shardings["params"] = param_shardings
  return shardings


def _check_restored_shapes(state, abstract_state):
  flat_now = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
  flat_got = jax.tree_util.tree_flatten_with_path(state)[0]
  for (path, want), (_, got) in zip(flat_now, flat_got):
    if want.shape != got.shape:
      raise config_util.ConfigError(
          f"Checkpoint parameter {jax.tree_util.keystr(path)} has shape {got.shape} but the "
          f"model expects {want.shape}. The config changed the model; use a new --workdir.")


def sample_after_training(graphdef, params, tok, tc) -> list[str]:
  """Samples on the mesh the params live on; multi-host: gathered, sampled on process 0."""
  from llmjax import generate  # pylint: disable=import-outside-toplevel
  if jax.process_count() > 1:  # Every process takes part in the gather.
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    params = multihost_utils.process_allgather(params, tiled=True)
    if jax.process_index() != 0:
      return []
  model = nnx.merge(graphdef, params)
  if not hasattr(model, "decode"):
    return []
  gen = generate.Generator(model, eot_id=tok.eot_id)
  prompt = tok.encode(tc.sample_prompt) if tc.sample_prompt else []
  out = gen.generate([prompt], tc.sample_tokens, params=generate.SamplingParams(
      temperature=0.8, top_k=200), seed=tc.seed)
  text = tc.sample_prompt + tok.decode(out[0])
  print("\n--- sample ---\n" + text + "\n--------------", flush=True)
  return [text]
