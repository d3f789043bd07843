"""Losses keep the maths: the fused linear cross-entropy equals the plain one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llmjax import models
from llmjax.models import gpt
from llmjax.models import loss as loss_lib
from llmjax.train import step as step_lib

TINY = dict(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=32)


def plain_loss(x, table, targets, weights, vocab):
  logits = gpt.tied_logits(x, table, gpt.GPTConfig(**{**TINY, "vocab_size": vocab}))
  return loss_lib.cross_entropy(logits, targets, weights)


def chunked_loss(x, table, targets, weights, vocab, chunk_tokens):
  return loss_lib.linear_cross_entropy(
    x, table, targets, weights, vocab_size=vocab, chunk_tokens=chunk_tokens
  )


def problem(b=3, t=10, d=32, vocab=97, padded=128, seed=0):
  ks = jax.random.split(jax.random.key(seed), 4)
  x = jax.random.normal(ks[0], (b, t, d))
  table = 0.3 * jax.random.normal(ks[1], (padded, d))
  targets = jax.random.randint(ks[2], (b, t), 0, vocab)
  targets = targets.at[0, 2].set(-1).at[2, 9].set(-1)  # Ignored positions.
  weights = (jax.random.uniform(ks[3], (b, t)) > 0.2).astype(jnp.float32)
  return x, table, targets, weights


@pytest.mark.parametrize("chunk_tokens", [6, 12, 512])  # Time chunks of 2, 4 (padded), 10.
@pytest.mark.parametrize("use_weights", [False, True])
def test_linear_cross_entropy_equals_plain_in_value_and_gradient(chunk_tokens, use_weights):
  x, table, targets, weights = problem()
  weights = weights if use_weights else None

  def value(fn):
    return lambda x, table: fn(x, table)[0]

  plain = jax.jit(
    jax.value_and_grad(value(lambda x, tb: plain_loss(x, tb, targets, weights, 97)), argnums=(0, 1))
  )(x, table)
  chunked = jax.jit(
    jax.value_and_grad(
      value(lambda x, tb: chunked_loss(x, tb, targets, weights, 97, chunk_tokens)), argnums=(0, 1)
    )
  )(x, table)
  np.testing.assert_allclose(chunked[0], plain[0], rtol=1e-6, atol=1e-6)
  for got, want in zip(chunked[1], plain[1]):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  # Padding rows of the table get no gradient.
  assert np.abs(np.asarray(chunked[1][1][97:])).max() == 0.0
  # Sum and count as the plain loss reports them.
  _, (total, count) = chunked_loss(x, table, targets, weights, 97, chunk_tokens)
  _, (want_total, want_count) = plain_loss(x, table, targets, weights, 97)
  np.testing.assert_allclose(total, want_total, rtol=1e-6)
  assert int(count) == int(want_count)


def test_linear_cross_entropy_scales_with_the_incoming_gradient():
  x, table, targets, _ = problem()
  g_plain = jax.grad(lambda x: 3.0 * plain_loss(x, table, targets, None, 97)[0])(x)
  g_chunk = jax.grad(lambda x: 3.0 * chunked_loss(x, table, targets, None, 97, 6)[0])(x)
  np.testing.assert_allclose(g_chunk, g_plain, rtol=1e-6, atol=1e-6)


def test_all_ignored_targets_give_zero_loss_and_gradient():
  x, table, _, _ = problem()
  targets = -jnp.ones((3, 10), jnp.int32)
  loss, grads = jax.value_and_grad(
    lambda x, tb: chunked_loss(x, tb, targets, None, 97, 6)[0], argnums=(0, 1)
  )(x, table)
  assert float(loss) == 0.0
  assert all(float(jnp.abs(g).max()) == 0.0 for g in grads)


def test_gradient_never_holds_a_full_logits_array():
  """The point of the lever: no [B, T, V] (or [B*T, V]) array in the differentiated program."""
  b, t, d, padded = 4, 64, 32, 128
  x, table, targets, _ = problem(b=b, t=t, d=d)
  fn = jax.grad(lambda x, tb: chunked_loss(x, tb, targets, None, 97, 64)[0], argnums=(0, 1))
  shapes = {
    tuple(v.aval.shape)
    for eqn in _all_eqns(jax.make_jaxpr(fn)(x, table).jaxpr)
    for v in eqn.outvars
  }
  full = {(b, t, 97), (b, t, padded), (b * t, 97), (b * t, padded)}
  assert not shapes & full
  assert (b, 16, padded) in shapes  # One chunk of 64 positions: 4 rows x 16 steps.
  plain = jax.grad(lambda x, tb: plain_loss(x, tb, targets, None, 97)[0], argnums=(0, 1))
  plain_shapes = {
    tuple(v.aval.shape)
    for eqn in _all_eqns(jax.make_jaxpr(plain)(x, table).jaxpr)
    for v in eqn.outvars
  }
  assert plain_shapes & full  # The check itself can see a full logits array.


def _all_eqns(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in _params_jaxprs(eqn):
      yield from _all_eqns(sub)


def _params_jaxprs(eqn):
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns"):
        yield item.jaxpr
      elif hasattr(item, "eqns"):
        yield item


@pytest.mark.parametrize("scan", [False, True])
def test_model_loss_equals_cross_entropy_of_the_full_logits(scan):
  model = models.build(gpt.GPTConfig(**TINY, scan_layers=scan), seed=0)
  graphdef, params = nnx.split(model)
  tokens = jax.random.randint(jax.random.key(1), (2, 17), 0, 97)
  inputs, targets = tokens[:, :-1], tokens[:, 1:]

  def fused(params):
    return loss_lib.model_loss(nnx.merge(graphdef, params), inputs, targets)[0]

  def plain(params):
    return loss_lib.cross_entropy(nnx.merge(graphdef, params)(inputs), targets)[0]

  (l1, g1) = jax.jit(jax.value_and_grad(fused))(params)
  (l2, g2) = jax.jit(jax.value_and_grad(plain))(params)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # The tied table's gradient has both parts: embedding lookup and output projection.
  assert float(jnp.abs(g1["wte"][...]).max()) > 0.0


def test_softmax_restricted_to_some_ids_is_the_cross_entropy_of_their_logits():
  model = models.build(gpt.GPTConfig(**TINY), seed=0)
  graphdef, params = nnx.split(model)
  ids = np.asarray([3, 5, 8, 13, 21, 34, 55, 89])
  tokens = jnp.asarray(ids[np.random.default_rng(0).integers(0, len(ids), (2, 17))])
  inputs, targets = tokens[:, :-1], tokens[:, 1:].at[0, 0].set(-1)  # One ignored target.
  restricted = loss_lib.SoftmaxIds(ids, 97)
  position = {int(v): i for i, v in enumerate(ids)}
  targets_among_ids = jnp.asarray(
    [[position.get(int(v), -1) for v in row] for row in np.asarray(targets)]
  )

  def fused(params):
    model = nnx.merge(graphdef, params)
    return loss_lib.model_loss(model, inputs, targets, output_ids=restricted)[0]

  def plain(params):  # The full logits, the other ids' columns dropped.
    logits = nnx.merge(graphdef, params)(inputs)[..., ids]
    return loss_lib.cross_entropy(logits, targets_among_ids)[0]

  (l1, g1) = jax.jit(jax.value_and_grad(fused))(params)
  (l2, g2) = jax.jit(jax.value_and_grad(plain))(params)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  full = loss_lib.model_loss(nnx.merge(graphdef, params), inputs, targets)[0]
  assert float(l1) < float(full)  # Fewer ids share the probability.
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Rows of ids outside the set get gradient only from the embedding lookup: none here.
  others = np.setdiff1d(np.arange(97), ids)
  assert float(jnp.abs(g1["wte"][...][others]).max()) == 0.0
  with pytest.raises(ValueError, match=r"in \[0, 97\)"):
    loss_lib.SoftmaxIds([5, 97], 97)


def test_eval_step_uses_the_same_loss():
  model = models.build(gpt.GPTConfig(**TINY), seed=0)
  graphdef, params = nnx.split(model)
  tokens = jax.random.randint(jax.random.key(2), (4, 17), 0, 97)
  batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
  total, count = jax.jit(step_lib.make_eval_step(graphdef))(params, batch)
  _, (want_total, want_count) = jax.jit(
    lambda p: loss_lib.cross_entropy(nnx.merge(graphdef, p)(batch["inputs"]), batch["targets"])
  )(params)
  np.testing.assert_allclose(total, want_total, rtol=1e-6)
  assert int(count) == int(want_count) == 64


def test_bfloat16_compute_matches_plain_loss_closely():
  model = models.build(gpt.GPTConfig(**TINY, dtype=jnp.bfloat16), seed=0)
  tokens = jax.random.randint(jax.random.key(3), (2, 17), 0, 97)
  graphdef, params = nnx.split(model)
  fused, _ = jax.jit(
    lambda p: loss_lib.model_loss(nnx.merge(graphdef, p), tokens[:, :-1], tokens[:, 1:])
  )(params)
  plain, _ = jax.jit(
    lambda p: loss_lib.cross_entropy(nnx.merge(graphdef, p)(tokens[:, :-1]), tokens[:, 1:])
  )(params)
  np.testing.assert_allclose(fused, plain, rtol=1e-6)
