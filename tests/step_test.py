"""The one train step every job uses: gradient accumulation, aux metrics, frozen leaves."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from llmjax.train import step as step_lib


def quadratic_loss(params, batch, key):
  """Mean squared error of a linear map; aux: the mean target (to check averaging)."""
  del key
  pred = batch["x"] @ params["w"] + params["b"]
  return jnp.mean((pred - batch["y"]) ** 2), {"mean_y": batch["y"].mean()}


def data(n=8):
  rng = np.random.default_rng(0)
  return {
    "x": jnp.asarray(rng.normal(size=(n, 3)), jnp.float32),
    "y": jnp.asarray(rng.normal(size=(n,)), jnp.float32),
  }


def run(batch, micro: int, trainable=None):
  params = {"w": jnp.array([0.5, -0.0, 1.0]), "b": jnp.array(-0.0)}
  tx = optax.sgd(0.1)
  step = jax.jit(
    step_lib.make_train_step(
      quadratic_loss, tx, optax.constant_schedule(0.1), seed=0, trainable=trainable
    )
  )
  shaped = jax.tree.map(lambda v: v.reshape((micro, v.shape[0] // micro) + v.shape[1:]), batch)
  return step(step_lib.init_state(params, tx), shaped)


def test_accumulated_micro_batches_equal_the_full_batch():
  batch = data()
  full_state, full = run(batch, 1)
  acc_state, acc = run(batch, 4)
  np.testing.assert_allclose(acc["train_loss"], full["train_loss"], rtol=1e-6)
  np.testing.assert_allclose(acc["mean_y"], batch["y"].mean(), rtol=1e-6)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
    acc_state["params"],
    full_state["params"],
  )
  assert int(acc_state["step"]) == 1 and float(full["lr"]) == np.float32(0.1)


def test_frozen_leaves_stay_bit_identical_even_negative_zero():
  state, _ = run(data(), 1, trainable={"w": True, "b": False})
  assert np.signbit(state["params"]["b"]) and float(state["params"]["b"]) == 0.0
  assert not np.array_equal(state["params"]["w"], [0.5, -0.0, 1.0])
  plain, _ = run(data(), 1, trainable={"w": True, "b": True})
  assert float(plain["params"]["b"]) != 0.0
