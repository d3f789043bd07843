"""The jitted train and eval steps, written as pure functions of a state pytree.

The train state is a plain dict: {'params', 'opt_state', 'step'}. Models are rebuilt
inside the step with `nnx.merge(graphdef, params)`, so the compiled step carries no
Python object graph. Batches arrive as {'inputs', 'targets'} of shape [A, B/A, T]:
A micro-batches whose gradients are averaged (gradient accumulation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from llmjax.models import loss as loss_lib

TrainState = dict[str, Any]


def offset_targets(batch: dict, offset: int) -> dict:
  """Targets `offset` tokens ahead (`model.target_offset`): position t is scored on
  targets[t + offset - 1]; the last offset - 1 positions have no target and are ignored."""
  if offset == 1:
    return batch

  def shift(x, fill):
    pad = jnp.full(x.shape[:-1] + (offset - 1,), fill, x.dtype)
    return jnp.concatenate([x[..., offset - 1 :], pad], axis=-1)

  out = dict(batch, targets=shift(batch["targets"], -1))
  if "weights" in batch:
    out["weights"] = shift(batch["weights"], 0)
  return out


def init_state(params, tx: optax.GradientTransformation) -> TrainState:
  return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}


def lm_loss(graphdef, dropout: float, output_ids=None) -> Callable:
  """Language-model loss(params, micro-batch, dropout key) -> (mean loss, no aux metrics);
  `output_ids` (`loss.SoftmaxIds`) restricts its softmax to those ids."""

  def loss_fn(params, micro, key):
    model = nnx.merge(graphdef, params)
    micro = offset_targets(micro, getattr(model.cfg, "target_offset", 1))
    loss, _ = loss_lib.model_loss(
      model,
      micro["inputs"],
      micro["targets"],
      micro.get("weights"),
      None if dropout == 0.0 else key,
      output_ids,
    )
    return loss, {}

  return loss_fn


def make_train_step(
  loss_fn: Callable,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  *,
  seed: int,
  trainable=None,
):
  """Returns step(state, batch) -> (state, metrics) for any job.

  `loss_fn(params, micro_batch, dropout_key) -> (loss, aux)`, aux a dict of scalar
  metrics. Batch leaves are [A, b, ...]: A micro-batches whose gradients (and aux
  metrics) are averaged. Micro-batch i of step s gets the dropout key of index s * A + i.
  `trainable` (as in `optimizer.make_optimizer`) leaves the False leaves untouched, bit
  for bit (not even `p + 0.0`, which would turn -0.0 into 0.0).
  """
  base_key = jax.random.key(seed + 1)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def grads_of(params, micro, index):
    return grad_fn(params, micro, jax.random.fold_in(base_key, index))

  def train_step(state: TrainState, batch) -> tuple[TrainState, dict]:
    params = state["params"]
    n_micro = jax.tree.leaves(batch)[0].shape[0]
    if n_micro == 1:
      (loss, aux), grads = grads_of(params, jax.tree.map(lambda x: x[0], batch), state["step"])
    else:

      def accumulate(carry, micro_and_index):
        loss_sum, aux_sum, grad_sum = carry
        micro, i = micro_and_index
        (loss, aux), grads = grads_of(params, micro, state["step"] * n_micro + i)
        return (
          loss_sum + loss,
          jax.tree.map(jnp.add, aux_sum, aux),
          jax.tree.map(jnp.add, grad_sum, grads),
        ), None

      zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
      aux_shape = jax.eval_shape(
        lambda: grads_of(params, jax.tree.map(lambda x: x[0], batch), 0)[0][1]
      )
      aux_zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), aux_shape)
      (loss, aux, grads), _ = jax.lax.scan(
        accumulate, (jnp.zeros(()), aux_zeros, zeros), (batch, jnp.arange(n_micro))
      )
      loss = loss / n_micro
      aux = jax.tree.map(lambda a: a / n_micro, aux)
      grads = jax.tree.map(lambda g, p: (g / n_micro).astype(p.dtype), grads, params)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    if trainable is None:
      new_params = optax.apply_updates(params, updates)
    else:
      mask = trainable(params) if callable(trainable) else trainable
      new_params = jax.tree.map(
        lambda p, u, t: (p + u).astype(p.dtype) if t else p, params, updates, mask
      )
    new_state = {"params": new_params, "opt_state": opt_state, "step": state["step"] + 1}
    metrics = {
      "train_loss": loss,
      "grad_norm": optax.tree.norm(grads),
      "lr": schedule(state["step"]),
      **aux,
    }
    return new_state, metrics

  return train_step


def make_eval_step(graphdef):
  """Returns eval(params, batch) -> (sum of token losses, token count) for a [B, T] batch."""

  def eval_step(params, batch):
    model = nnx.merge(graphdef, params)
    batch = offset_targets(batch, getattr(model.cfg, "target_offset", 1))
    _, (total, count) = loss_lib.model_loss(
      model, batch["inputs"], batch["targets"], batch.get("weights")
    )
    return total, count

  return eval_step
