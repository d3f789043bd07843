"""Language-model losses in float32: plain cross-entropy on logits, and the fused output
projection + cross-entropy (`linear_cross_entropy`) that never stores [B, T, V] logits."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from llmjax.models import layers


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


def linear_cross_entropy(
  x_BxTxD,
  table_VxD,
  targets_BxT,
  weights_BxT=None,
  *,
  vocab_size: int | None = None,
  dtype=jnp.float32,
  chunk_tokens: int = 8192,
):
  """`cross_entropy(x @ table[:vocab_size].T, targets)` without storing the logits.

  The output projection and the loss are one operation with a hand-written gradient.
  Its forward pass forms each chunk's logits, loss and gradient (softmax minus one-hot,
  by comparison with an iota: no scatter) and folds the gradient straight into d`x` and
  d`table`; nothing of size [B, T, V] is kept for the backward pass and no logits are
  recomputed. The three matmuls are written in the forms the CPU and GPU kernels take
  without transposing a [B*T, V] operand: logits = x @ table.T, dx = g @ table and
  d`table`.T = x.T @ g (transposed once at the end, a [D, V] array).

  Args:
    x_BxTxD: final hidden states.
    table_VxD: output projection / tied embedding, rows >= `vocab_size` are padding.
    targets_BxT: target ids (< 0 = ignored).
    weights_BxT: optional; positions with weight <= 0 are ignored.
    vocab_size: real vocabulary (padding rows get no probability); None = all rows.
    dtype: matmul input dtype (the model's compute dtype); logits and loss are float32.
    chunk_tokens: positions (batch x time) per chunk; whole batch rows by slices of time,
      so a batch sharded over devices stays where it is. Bounds the [chunk, V] working set.

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
  vocab = table_VxD.shape[0] if vocab_size is None else vocab_size
  total = _linear_nll_sum(
    vocab, jnp.dtype(dtype), chunk, x_BxTxD, table_VxD, targets_BxT, valid_BxT
  )
  count = valid_BxT.sum()
  return total / jnp.maximum(count, 1), (total, count)


def _to_chunks(chunk, a_BxT):
  """[B, T, ...] -> [T / chunk, B, chunk, ...] (time slices first, for a scan)."""
  b, t = a_BxT.shape[:2]
  return jnp.moveaxis(a_BxT.reshape((b, t // chunk, chunk) + a_BxT.shape[2:]), 1, 0)


def _chunk_loss(vocab, dtype, table_VxD, x_BxCxD, targets_BxC, valid_BxC, *, grads: bool):
  """One chunk's summed loss; with `grads`, also (d loss / d x [B, C, D],
  (d loss / d table).T [D, V])."""
  w_VxD = table_VxD.astype(dtype)
  x_BxCxD = x_BxCxD.astype(dtype)
  # Low-precision matmuls return their own dtype (as the model's `unembed` does; XLA:CPU
  # has no bfloat16 x bfloat16 -> float32 dot); the loss itself is float32.
  logits = jnp.einsum("bcd,vd->bcv", x_BxCxD, w_VxD).astype(jnp.float32)
  logits = layers.constrain(logits, ("batch", None, "vocab"))
  ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 2)
  if vocab < table_VxD.shape[0]:
    logits = jnp.where(ids < vocab, logits, -jnp.inf)
  logz_BxC = jax.nn.logsumexp(logits, axis=-1)
  is_target = ids == targets_BxC[..., None]
  target_BxC = jnp.sum(jnp.where(is_target, logits, 0.0), axis=-1)
  nll = jnp.where(valid_BxC, logz_BxC - target_BxC, 0.0).sum()
  if not grads:
    return nll
  g = jnp.exp(logits - logz_BxC[..., None]) - is_target
  g = jnp.where(valid_BxC[..., None], g, 0.0).astype(dtype)
  d_x = jnp.einsum("bcv,vd->bcd", g, w_VxD).astype(jnp.float32)
  d_table_DxV = jnp.einsum("bcd,bcv->dv", x_BxCxD, g).astype(jnp.float32)
  return nll, d_x, d_table_DxV


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _linear_nll_sum(vocab, dtype, chunk, x_BxTxD, table_VxD, targets_BxT, valid_BxT):
  """Summed loss only (evaluation): no gradient matmuls."""
  loss = functools.partial(_chunk_loss, vocab, dtype, table_VxD, grads=False)
  if x_BxTxD.shape[1] == chunk:
    return loss(x_BxTxD, targets_BxT, valid_BxT)
  chunks = [_to_chunks(chunk, a) for a in (x_BxTxD, targets_BxT, valid_BxT)]
  return jax.lax.map(lambda xs: loss(*xs), chunks).sum()


def _linear_nll_sum_fwd(vocab, dtype, chunk, x_BxTxD, table_VxD, targets_BxT, valid_BxT):
  """Summed loss, and as residuals the gradients it has w.r.t. x and the table."""
  terms = functools.partial(_chunk_loss, vocab, dtype, table_VxD, grads=True)
  if x_BxTxD.shape[1] == chunk:
    nll, d_x, d_table_DxV = terms(x_BxTxD, targets_BxT, valid_BxT)
  else:

    def one(d_table_DxV, xs):
      nll, d_x, d_table_chunk = terms(*xs)
      return d_table_DxV + d_table_chunk, (nll, d_x)

    chunks = [_to_chunks(chunk, a) for a in (x_BxTxD, targets_BxT, valid_BxT)]
    zeros = jnp.zeros(table_VxD.shape[::-1], jnp.float32)
    d_table_DxV, (nll_N, d_x_NxBxCxD) = jax.lax.scan(one, zeros, chunks)
    nll = nll_N.sum()
    d_x = jnp.moveaxis(d_x_NxBxCxD, 0, 1).reshape(x_BxTxD.shape)
  return nll, (d_x.astype(x_BxTxD.dtype), d_table_DxV.T.astype(table_VxD.dtype))


def _linear_nll_sum_bwd(vocab, dtype, chunk, residuals, g):
  del vocab, dtype, chunk
  d_x, d_table = residuals
  return (g * d_x).astype(d_x.dtype), (g * d_table).astype(d_table.dtype), None, None


_linear_nll_sum.defvjp(_linear_nll_sum_fwd, _linear_nll_sum_bwd)


def model_loss(model, inputs_BxT, targets_BxT, weights_BxT=None, dropout_key=None, output_ids=None):
  """Next-token loss of `model`; (mean, (sum, count)) as `cross_entropy`.

  A model with `hidden()` and `output_head()` (returning `(table_VxD, vocab_size, dtype)`
  such that `model.unembed(x)` is `x @ table[:vocab_size].T` computed in `dtype`) gets
  `linear_cross_entropy`; any other model is called for its full logits.

  `output_ids` (a `SoftmaxIds`) restricts the softmax to those ids: only their rows of
  the table are multiplied, and every target must be one of them.
  """
  if hasattr(model, "output_head") and hasattr(model, "hidden"):
    x_BxTxD, _ = model.hidden(inputs_BxT, dropout_key=dropout_key)
    table, vocab_size, dtype = model.output_head()
    if output_ids is not None:
      table, vocab_size = table[output_ids.ids_K], None
      targets_BxT = jnp.where(targets_BxT >= 0, output_ids.index_V[targets_BxT], -1)
    return linear_cross_entropy(
      x_BxTxD, table, targets_BxT, weights_BxT, vocab_size=vocab_size, dtype=dtype
    )
  if output_ids is not None:
    raise ValueError(f"{type(model).__name__} has no output head to restrict the softmax of.")
  logits = model(inputs_BxT, dropout_key=dropout_key)
  return cross_entropy(logits, targets_BxT, weights_BxT)


class SoftmaxIds:
  """The ids a restricted softmax runs over: `ids_K` (sorted) and `index_V`, each id's
  position among them (-1 for the others; an ignored target)."""

  def __init__(self, ids, vocab_size: int):
    ids = np.unique(np.asarray(ids, np.int64))
    if ids.size == 0 or ids[0] < 0 or ids[-1] >= vocab_size:
      raise ValueError(f"softmax ids must be non-empty and in [0, {vocab_size}).")
    index = np.full(vocab_size, -1, np.int32)
    index[ids] = np.arange(ids.size, dtype=np.int32)
    self.ids_K = jnp.asarray(ids, jnp.int32)
    self.index_V = jnp.asarray(index)
