"""The jitted train and eval steps, written as pure functions of a state pytree.

The train state is a plain dict: {'params', 'opt_state', 'step'}. Models are rebuilt
inside the step with `nnx.merge(graphdef, params)`, so the compiled step carries no
Python object graph. Batches arrive as {'inputs', 'targets'} of shape [A, B/A, T]:
A micro-batches whose gradients are averaged (gradient accumulation).
"""

from __future__ import annotations

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
    logits = model(micro["inputs"], dropout_key=key)
    loss, _ = cross_entropy(logits, micro["targets"], micro.get("weights"))
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
    logits = model(batch["inputs"])
    _, (total, count) = cross_entropy(logits, batch["targets"], batch.get("weights"))
    return total, count
  return eval_step
