"""The language-model job (`config.job = 'train'`): GPT and conv-attention on a token
stream (plain text or a notes corpus), run by `llmjax.train.runner`.

`train(config, workdir)` is what `python -m llmjax.main` and `llmjax.Trainer` run.
Running it again on the same workdir resumes from the newest checkpoint, bit for bit.
`build_steps` (the sharded init and the jitted steps) is shared with `benchmarks/`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from llmjax import data as data_lib
from llmjax import models
from llmjax.data import pipeline, shards
from llmjax.inference import generate
from llmjax.models import loss as loss_lib
from llmjax.parallel import mesh as mesh_lib
from llmjax.pretrained import init_from
from llmjax.runs import checkpoint as ckpt_lib
from llmjax.train import metrics as metrics_lib
from llmjax.train import optimizer as optim_lib
from llmjax.train import recite_check as recite_lib
from llmjax.train import runner
from llmjax.train import step as step_lib
from llmjax.train.shape import RunShape, lm_shape
from llmjax.train.task import RunResult, Task
from llmjax.util import errors, fileio

log = logging.getLogger(__name__)
RECITED = ("recited_share", "recited", "recite_prompts")  # A book run's last recitation.


@dataclasses.dataclass(frozen=True, kw_only=True)
class LMResult(RunResult):
  """A language-model run's result: the run's figures plus the data's and the samples."""

  unigram_entropy: float  # Nats per token of the validation split's unigram distribution.
  bytes_per_token: float  # UTF-8 bytes per validation token.
  n_train_tokens: int
  n_val_tokens: int
  samples: list[str]  # The end-of-training samples (none when interrupted or disabled).


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, **kw) -> LMResult:
  return runner.run(config, workdir, LMTask, **kw)


def training_mesh(config) -> tuple[jax.sharding.Mesh, RunShape]:
  """The mesh and the run's shape on it (the micro-batch checked against its batch axes)."""
  try:
    mesh = mesh_lib.make_mesh(config.mesh)
  except ValueError as e:
    raise errors.ConfigError(str(e)) from e
  return mesh, lm_shape(config, batch_axes=mesh.shape["data"] * mesh.shape["fsdp"])


def to_global_batch(batch: dict, grad_accum: int, sharding: NamedSharding) -> dict:
  """[b_local, T] host arrays -> global [A, B/A, T] arrays sharded over the batch axes."""

  def one(x):
    x = np.asarray(x)
    x = x.reshape((grad_accum, x.shape[0] // grad_accum) + x.shape[1:])
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(one, batch)


def evaluate(eval_step, params, batches, sharding) -> float:
  """Mean token loss over `batches` (this process's rows of each)."""
  total, count = 0.0, 0
  for batch in batches:
    batch = jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
    t, c = eval_step(params, batch)
    total += float(t)
    count += int(c)
  return total / max(count, 1)


def state_shardings_for(abstract_state, param_shardings, mesh):
  """Shardings of the whole train state: optimizer leaves that mirror a parameter (Adam's
  moments) take that parameter's sharding; everything else (counts, step) is replicated."""
  by_path = {
    tuple(str(k) for k in path): s
    for path, s in jax.tree_util.tree_flatten_with_path(param_shardings)[0]
  }

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


@dataclasses.dataclass(frozen=True)
class Steps:
  """Everything needed to train a model section on a mesh; shared with `benchmarks/`."""

  mesh: jax.sharding.Mesh
  graphdef: Any  # The model's nnx.GraphDef (rebuilt inside the steps).
  abstract_state: Any  # Train state of ShapeDtypeStructs (no sharding).
  state_shardings: Any  # NamedShardings matching the train state.
  init: Any  # () -> train state, initialised directly into its shardings.
  train_step: Any  # (state, batch [A, B/A, T]) -> (state, metrics); donates the state.
  eval_step: Any  # (params, batch [B, T]) -> (sum of token losses, token count).
  batch_sharding: NamedSharding  # Train batches [A, B/A, T]: B over data x fsdp.
  eval_sharding: NamedSharding  # Eval batches [B, T].
  param_shardings: Any = None
  tx: Any = None


def ids_present(tokens, vocab_size: int, chunk: int = 1 << 24) -> np.ndarray:
  """The distinct ids of `tokens` (a memmap is read in chunks), sorted."""
  counts = np.zeros(vocab_size, np.int64)
  for start in range(0, len(tokens), chunk):
    counts += np.bincount(np.asarray(tokens[start : start + chunk]), minlength=vocab_size)
  return np.flatnonzero(counts)


def build_steps(
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
  *,
  model_cfg: ml_collections.ConfigDict | None = None,
  seed: int | None = None,
  trainable=None,
  pretrained: bool = True,
  train_ids=None,
) -> Steps:
  """The sharded init and the jitted train/eval steps of `model_cfg` (default
  `config.model`) on `mesh`; `trainable` masks the optimizer (frozen leaves never move).
  With `train.softmax_ids=train`, `train_ids` (the training split's ids) are the ones the
  training loss's softmax runs over."""
  tc, mc = config.train, model_cfg or config.model
  seed = tc.seed if seed is None else seed
  abstract_model = nnx.eval_shape(lambda: models.build(mc, seed))
  graphdef, abstract_params = nnx.split(abstract_model)
  param_shardings = mesh_lib.param_shardings(abstract_params, mesh)
  schedule = optim_lib.learning_rate_schedule(config.optim, tc.steps)
  tx = optim_lib.make_optimizer(config.optim, tc.steps, trainable)

  def init_fn(params=None):  # params: pretrained weights, or None for a random init.
    if params is None:
      params = nnx.to_pure_dict(nnx.state(models.build(mc, seed)))
    params = jax.tree.map(jax.lax.with_sharding_constraint, params, param_shardings)
    return step_lib.init_state(params, tx)

  def init():  # model.init_from: start from a checkpoint's weights (None = scratch).
    jitted = jax.jit(init_fn, out_shardings=state_shardings, donate_argnums=0)
    return jitted(init_from.pretrained_params(mc, param_shardings) if pretrained else None)

  abstract_state = jax.eval_shape(init_fn)
  state_shardings = state_shardings_for(abstract_state, param_shardings, mesh)
  batch_sharding = NamedSharding(mesh, P(None, ("data", "fsdp")))
  eval_sharding = mesh_lib.batch_sharding(mesh)
  output_ids = None
  if tc.get("softmax_ids", "all") == "train":
    if train_ids is None:
      raise errors.ConfigError(
        "train.softmax_ids=train restricts the softmax to the training split's ids, "
        "which this job does not give; use train.softmax_ids=all."
      )
    if not hasattr(abstract_model, "output_head"):
      raise errors.ConfigError(
        f"train.softmax_ids=train needs a model with a tied output table; model.arch="
        f"{mc.arch!r} has none: use train.softmax_ids=all."
      )
    output_ids = loss_lib.SoftmaxIds(train_ids, mc.vocab_size)
  loss_fn = step_lib.lm_loss(graphdef, float(mc.dropout), output_ids)
  step_fn = step_lib.make_train_step(loss_fn, tx, schedule, seed=tc.seed, trainable=trainable)
  train_step = jax.jit(
    mesh_lib.traced_under(mesh, step_fn),
    in_shardings=(state_shardings, batch_sharding),
    out_shardings=(state_shardings, mesh_lib.replicated(mesh)),
    donate_argnums=0,
  )
  eval_step = jax.jit(
    mesh_lib.traced_under(mesh, step_lib.make_eval_step(graphdef)),
    in_shardings=(state_shardings["params"], eval_sharding),
  )
  return Steps(
    mesh=mesh,
    graphdef=graphdef,
    abstract_state=abstract_state,
    state_shardings=state_shardings,
    init=init,
    train_step=train_step,
    eval_step=eval_step,
    batch_sharding=batch_sharding,
    eval_sharding=eval_sharding,
    param_shardings=param_shardings,
    tx=tx,
  )


def sample_after_training(graphdef, params, tok, tc) -> list[str]:
  """Samples on the mesh the params live on; multi-host: gathered, sampled on process 0."""
  if jax.process_count() > 1:  # Every process takes part in the gather.
    params = multihost_utils.process_allgather(params, tiled=True)
    if jax.process_index() != 0:
      return []
  model = nnx.merge(graphdef, params)
  if not hasattr(model, "decode"):
    return []
  gen = generate.Generator(model, eot_id=tok.eot_id)
  prompt = tok.encode_prompt(tc.sample_prompt) if tc.sample_prompt else []
  out = gen.generate(
    [prompt],
    tc.sample_tokens,
    params=generate.SamplingParams(temperature=0.8, top_k=200),
    seed=tc.seed,
  )
  text = tc.sample_prompt + tok.decode(out[0])
  print("\n--- sample ---\n" + text + "\n--------------", flush=True)
  return [text]


class LMTask(Task):
  """Next-token (or `model.target_offset`-ahead) training on `data_splits(config)`."""

  result_type = LMResult
  recite_check = None  # setup's RecitationCheck when the config has a recite section.
  last_recited = None  # The last evaluation's recitation figures.

  def __init__(self, config, workdir, latest_step):
    # model.init_from fixes the architecture before anything is written or built.
    super().__init__(init_from.resolve_model_config(config), workdir, latest_step)

  def load_data(self):
    config, tc, mc = self.config, self.config.train, self.config.model
    chief = jax.process_index() == 0
    self.splits, self.tok = data_lib.data_splits(config, self.workdir if chief else None)
    self.mesh, self.shape = training_mesh(config)
    n_proc, proc = jax.process_count(), jax.process_index()
    starts = None
    if config.data.windows == "lines":
      starts = pipeline.line_starts(
        self.splits.train,
        lambda i: self.tok.decode([i]).endswith("\n"),
        block_size=mc.block_size,
        blank=lambda i: not self.tok.decode([i]).strip(),
      )
    self.train_iter = pipeline.train_iterator(
      self.splits.train,
      mc.block_size,
      self.shape.batch,
      tc.seed,
      shard_index=proc,
      shard_count=n_proc,
      starts=starts,
    )
    self.eval_data = self.local_eval_data(self.splits.val, tc.eval_batches)
    entropy = metrics_lib.unigram_entropy(self.splits.val)
    self.reference = f"unigram entropy {entropy:.3f}"
    return {
      "unigram_entropy": entropy,
      "n_train_tokens": len(self.splits.train),
      "n_val_tokens": len(self.splits.val),
      "bytes_per_token": metrics_lib.bytes_per_token(self.splits.val, self.tok),
    }

  def local_eval_data(self, tokens, n_batches):
    n_proc, proc = jax.process_count(), jax.process_index()
    data = pipeline.eval_batches(
      tokens, self.config.model.block_size, self.shape.eval_batch, n_batches
    )
    return [{k: np.split(np.asarray(v), n_proc)[proc] for k, v in b.items()} for b in data]

  def setup(self):
    facts = self.load_data()
    train_ids = None
    if self.config.train.softmax_ids == "train":
      train_ids = ids_present(self.splits.train, self.config.model.vocab_size)
    self.steps = build_steps(self.config, self.mesh, train_ids=train_ids)
    if init_from.is_pretrained(self.config.model):
      facts.update(self.start_commit())
    self.recite_check = None
    if "recite" in self.config:
      check = recite_lib.RecitationCheck(
        self.config.recite, self.steps.graphdef, self.tok, self.splits.train
      )
      if check.usable():
        self.recite_check = check
        facts["recite_prompts"] = 2 * len(check.pairs)
    return facts

  def start_commit(self) -> dict:
    """The hub commit the run's weights came from (what an unpinned hub id was on the day:
    pin it with @commit to start again from the same weights). A resumed run keeps the one
    its start recorded, not what the hub holds now."""
    if self.latest_step is not None:
      previous = self.workdir / "summary.json"
      try:
        recorded = json.loads(previous.read_text()) if previous.is_file() else {}
      except (OSError, ValueError) as e:  # Provenance only: the resume goes on without it.
        log.warning("%s is unreadable (%s); init_from_commit is not carried over.", previous, e)
        recorded = {}
      commit = recorded.get("init_from_commit") if isinstance(recorded, dict) else None
      return {"init_from_commit": commit} if commit else {}
    commit = init_from.checkpoint_commit(self.config.model.init_from)
    return {"init_from_commit": commit} if commit else {}

  def startup_line(self, num_params, start_step):
    return (
      f"llmjax: {self.config.name} | {num_params / 1e6:.2f}M parameters | mesh "
      f"{dict(self.mesh.shape)} | {len(self.splits.train):,} train / "
      f"{len(self.splits.val):,} val tokens | {self.reference} nats"
    )

  def abstract_state(self, step):
    return ckpt_lib.abstract_like(self.steps.abstract_state, self.steps.state_shardings)

  def init_state(self):
    return self.steps.init()

  def restored(self, step, state):
    check_restored_shapes(state, self.steps.abstract_state)

  def device_batch(self, host_batch, step):
    return to_global_batch(host_batch, self.shape.grad_accum, self.steps.batch_sharding)

  def train_step(self, step):
    return self.steps.train_step

  def evaluate(self, params):
    loss = evaluate(self.steps.eval_step, params, self.eval_data, self.steps.eval_sharding)
    result = {"val_loss": loss, "val_perplexity": metrics_lib.perplexity(loss)}
    if self.recite_check is not None:
      result.update(self.recite_check(params))
      self.last_recited = {k: result[k] for k in RECITED}
    return result

  def goal_reached(self, result):
    return self.recite_check.goal_reached(result) if self.recite_check is not None else None

  def test(self, params):
    test_tokens = shards.optional_split(self.splits, "test")
    if test_tokens is None:
      return None
    n_batches = -(-len(test_tokens) // (self.shape.eval_batch * self.config.model.block_size))
    loss = evaluate(
      self.steps.eval_step,
      params,
      self.local_eval_data(test_tokens, n_batches),
      self.steps.eval_sharding,
    )
    return {
      "test_loss": loss,
      "test_perplexity": metrics_lib.perplexity(loss),
      "test_bits_per_byte": metrics_lib.bits_per_byte(
        loss, metrics_lib.bytes_per_token(test_tokens, self.tok)
      ),
      "test_tokens": len(test_tokens),
    }

  def graphdef(self):
    return self.steps.graphdef

  def finish(self, state, interrupted, best_eval, test):
    tc = self.config.train
    recited = self.final_recitation()
    if tc.sample_tokens <= 0 or interrupted:
      return {"samples": [], **recited}
    samples = sample_after_training(self.graphdef(), state["params"], self.tok, tc)
    if jax.process_index() == 0:
      fileio.atomic_write_text(self.workdir / "samples.txt", "\n\n".join(samples) + "\n")
    return {"samples": samples, "artifacts": ["samples.txt"], **recited}

  def final_recitation(self) -> dict:
    """The share recited at the last evaluation (a book run), from this run or, resumed
    with nothing left to train, from its metrics."""
    if self.recite_check is None:
      return {}
    if self.last_recited is None:
      records = metrics_lib.read_metrics(self.workdir)
      last = next((r for r in reversed(records) if "recited_share" in r), None)
      self.last_recited = last and {k: last[k] for k in RECITED if k in last}
    return self.last_recited or {}


def check_restored_shapes(state, abstract_state):
  flat_now = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
  flat_got = jax.tree_util.tree_flatten_with_path(state)[0]
  for (path, want), (_, got) in zip(flat_now, flat_got):
    if want.shape != got.shape:
      raise errors.ConfigError(
        f"Checkpoint parameter {jax.tree_util.keystr(path)} has shape {got.shape} but the "
        f"model expects {want.shape}. The config changed the model; use a new --workdir."
      )
