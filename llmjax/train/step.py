"""The jitted train and eval steps, written as pure functions of a state pytree.

The train state is a plain dict: {'params', 'opt_state', 'step'}. Models are rebuilt
inside the step with `nnx.merge(graphdef, params)`, so the compiled step carries no
Python object graph. Batches arrive as {'inputs', 'targets'} of shape [A, B/A, T]:
A micro-batches whose gradients are averaged (gradient accumulation).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

TrainState = dict[str, Any]


def cross_entropy(logits_BxTxV, targets_BxT, weights_BxT=None):
  """Mean next-token cross-entropy in float32 (targets < 0 are ignored)."""
  logits = logits_BxTxV.astype(jnp.float32)
  valid = targets_BxT >= 0
  if weights_BxT is not None:
    valid = valid & (weights_BxT > 0)
  safe_targets = jnp.where(valid, targets_BxT, 0)
  logz = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, safe_targets[..., None], axis=-1)[..., 0]
  nll = jnp.where(valid, logz - target_logit, 0.0)
  count = jnp.maximum(valid.sum(), 1)
  return nll.sum() / count, (nll.sum(), valid.sum())


def chunked_cross_entropy(logits_fn: Callable, x_BxTxD, table, targets_BxT, weights_BxT=None, *,
                          chunk_tokens: int = 512):
  """`cross_entropy(logits_fn(x, table), targets)` without materialising all the logits.

  The output projection runs on about `chunk_tokens` positions at a time (whole batch
  rows by slices of time, so a batch sharded over devices stays where it is). Under
  differentiation the forward pass also forms each chunk's gradient (softmax minus
  one-hot) at once and folds it into d`x` and d`table`: no [B, T, V] array is stored for
  the backward pass and no logits are recomputed. Same three matmuls as the plain loss,
  on a cache-sized working set instead of two full float32 [B, T, V] arrays.

  Args:
    logits_fn: pure function (x_BxCxD, table) -> logits_BxCxV (cast to float32 here).
    x_BxTxD: final hidden states.
    table: the output projection parameters `logits_fn` reads (e.g. tied embeddings).
    targets_BxT: target ids (< 0 = ignored).
    weights_BxT: optional; positions with weight <= 0 are ignored.
    chunk_tokens: positions (batch x time) per chunk.

  Returns:
    (mean loss over valid positions, (sum of losses, number of valid positions)), as
    `cross_entropy`.
  """
  valid_BxT = targets_BxT >= 0
  if weights_BxT is not None:
    valid_BxT = valid_BxT & (weights_BxT > 0)
  b, t = targets_BxT.shape
  chunk = max(1, min(t, chunk_tokens // b))
  pad = -t % chunk
  if pad:
    x_BxTxD = jnp.pad(x_BxTxD, ((0, 0), (0, pad), (0, 0)))
    targets_BxT = jnp.pad(targets_BxT, ((0, 0), (0, pad)))
    valid_BxT = jnp.pad(valid_BxT, ((0, 0), (0, pad)))
  targets_BxT = jnp.where(valid_BxT, targets_BxT, 0)
  total = _chunked_nll_sum(logits_fn, chunk, x_BxTxD, table, targets_BxT, valid_BxT)
  count = valid_BxT.sum()
  return total / jnp.maximum(count, 1), (total, count)


def _to_chunks(chunk, a_BxT):
  """[B, T, ...] -> [T / chunk, B, chunk, ...] (time slices first, for a scan)."""
  b, t = a_BxT.shape[:2]
  return jnp.moveaxis(a_BxT.reshape((b, t // chunk, chunk) + a_BxT.shape[2:]), 1, 0)


def _nll_sum(logits_BxCxV, targets_BxC, valid_BxC):
  """(sum of the valid positions' losses, logsumexp per position) of float32 logits."""
  logz_BxC = jax.nn.logsumexp(logits_BxCxV, axis=-1)
  target_BxC = jnp.take_along_axis(logits_BxCxV, targets_BxC[..., None], axis=-1)[..., 0]
  return jnp.where(valid_BxC, logz_BxC - target_BxC, 0.0).sum(), logz_BxC


def _f32_logits(logits_fn):
  return lambda x, table: logits_fn(x, table).astype(jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _chunked_nll_sum(logits_fn, chunk, x_BxTxD, table, targets_BxT, valid_BxT):
  def one(xs):
    x_BxCxD, targets_BxC, valid_BxC = xs
    return _nll_sum(_f32_logits(logits_fn)(x_BxCxD, table), targets_BxC, valid_BxC)[0]
  chunks = [_to_chunks(chunk, a) for a in (x_BxTxD, targets_BxT, valid_BxT)]
  return jax.lax.map(one, chunks).sum()


def _chunked_nll_sum_fwd(logits_fn, chunk, x_BxTxD, table, targets_BxT, valid_BxT):
  def one(d_table, xs):
    x_BxCxD, targets_BxC, valid_BxC = xs
    logits_BxCxV, vjp = jax.vjp(_f32_logits(logits_fn), x_BxCxD, table)
    nll, logz_BxC = _nll_sum(logits_BxCxV, targets_BxC, valid_BxC)
    # d nll / d logits = softmax - one_hot(target), at valid positions only.
    probs = jnp.exp(logits_BxCxV - logz_BxC[..., None])
    one_hot = jax.nn.one_hot(targets_BxC, logits_BxCxV.shape[-1], dtype=jnp.float32)
    d_x_BxCxD, d_table_chunk = vjp(jnp.where(valid_BxC[..., None], probs - one_hot, 0.0))
    return d_table + d_table_chunk.astype(jnp.float32), (nll, d_x_BxCxD)

  chunks = [_to_chunks(chunk, a) for a in (x_BxTxD, targets_BxT, valid_BxT)]
  d_table, (nll_N, d_x_NxBxCxD) = jax.lax.scan(
      one, jnp.zeros(table.shape, jnp.float32), chunks)
  d_x_BxTxD = jnp.moveaxis(d_x_NxBxCxD, 0, 1).reshape(x_BxTxD.shape)
  return nll_N.sum(), (d_x_BxTxD, d_table.astype(table.dtype))


def _chunked_nll_sum_bwd(logits_fn, chunk, residuals, g):
  d_x, d_table = residuals
  return (g * d_x).astype(d_x.dtype), (g * d_table).astype(d_table.dtype), None, None


_chunked_nll_sum.defvjp(_chunked_nll_sum_fwd, _chunked_nll_sum_bwd)


def model_loss(model, inputs_BxT, targets_BxT, weights_BxT=None, dropout_key=None):
  """Next-token loss of `model`; (mean, (sum, count)) as `cross_entropy`.

  A model with `hidden()` and `output_head()` (returning `(logits_fn, table)` such that
  `model.unembed(x) == logits_fn(x, table)`) gets the chunked loss; any other model is
  called for its full logits.
  """
  if hasattr(model, "output_head") and hasattr(model, "hidden"):
    x_BxTxD, _ = model.hidden(inputs_BxT, dropout_key=dropout_key)
    logits_fn, table = model.output_head()
    return chunked_cross_entropy(logits_fn, x_BxTxD, table, targets_BxT, weights_BxT)
  logits = model(inputs_BxT, dropout_key=dropout_key)
  return cross_entropy(logits, targets_BxT, weights_BxT)


def offset_targets(batch: dict, offset: int) -> dict:
  """Targets `offset` tokens ahead (`model.target_offset`): position t is scored on
  targets[t + offset - 1]; the last offset - 1 positions have no target and are ignored."""
  if offset == 1:
    return batch
  def shift(x, fill):
    pad = jnp.full(x.shape[:-1] + (offset - 1,), fill, x.dtype)
    return jnp.concatenate([x[..., offset - 1:], pad], axis=-1)
  out = dict(batch, targets=shift(batch["targets"], -1))
  if "weights" in batch:
    out["weights"] = shift(batch["weights"], 0)
  return out


def init_state(params, tx: optax.GradientTransformation) -> TrainState:
  return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}


def make_loss_fn(graphdef, dropout: float, base_key) -> Callable:
  def loss_fn(params, micro, step):
    model = nnx.merge(graphdef, params)
    micro = offset_targets(micro, getattr(model.cfg, "target_offset", 1))
    key = None if dropout == 0.0 else jax.random.fold_in(base_key, step)
    loss, _ = model_loss(model, micro["inputs"], micro["targets"], micro.get("weights"), key)
    return loss
  return loss_fn


def make_train_step(graphdef, tx: optax.GradientTransformation, schedule: optax.Schedule, *,
                    dropout: float, seed: int, loss_fn: Callable | None = None):
  """Returns step(state, batch) -> (state, metrics); batch leaves are [A, b, ...]."""
  base_key = jax.random.key(seed + 1)
  loss_fn = loss_fn or make_loss_fn(graphdef, dropout, base_key)
  grad_fn = jax.value_and_grad(loss_fn)

  def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
    params = state["params"]
    n_micro = jax.tree.leaves(batch)[0].shape[0]
    if n_micro == 1:
      loss, grads = grad_fn(params, jax.tree.map(lambda x: x[0], batch), state["step"])
    else:
      def accumulate(carry, micro_and_index):
        loss_sum, grad_sum = carry
        micro, i = micro_and_index
        loss, grads = grad_fn(params, micro, state["step"] * n_micro + i)
        return (loss_sum + loss, jax.tree.map(jnp.add, grad_sum, grads)), None

      zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
      (loss, grads), _ = jax.lax.scan(accumulate, (jnp.zeros(()), zeros),
                                      (batch, jnp.arange(n_micro)))
      loss = loss / n_micro
      grads = jax.tree.map(lambda g, p: (g / n_micro).astype(p.dtype), grads, params)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_state = {"params": optax.apply_updates(params, updates), "opt_state": opt_state,
                 "step": state["step"] + 1}
    metrics = {"train_loss": loss, "grad_norm": optax.tree.norm(grads),
               "lr": schedule(state["step"])}
    return new_state, metrics

  return train_step


def make_eval_step(graphdef):
  """Returns eval(params, batch) -> (sum of token losses, token count) for a [B, T] batch."""
  def eval_step(params, batch):
    model = nnx.merge(graphdef, params)
    batch = offset_targets(batch, getattr(model.cfg, "target_offset", 1))
    _, (total, count) = model_loss(model, batch["inputs"], batch["targets"],
                                   batch.get("weights"))
    return total, count
  return eval_step
