"""Mixed precision and rematerialisation: bfloat16 compute with float32 parameters trains
close to float32; every remat policy (and a scanned layer stack) computes the same losses."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from llmjax.config import load as config_load
from llmjax.parallel import mesh as mesh_lib
from llmjax.train import lm


def train_losses(n_steps=4, **overrides):
  """Losses of `n_steps` train steps of a tiny GPT on one device (and the final state)."""
  config = config_load.load_config("configs/shakespeare.py:smoke").unlock()
  config_load.apply_overrides(
    config,
    {
      "model.vocab_size": 64,
      "model.n_embd": 32,
      "model.n_head": 2,
      "model.n_layer": 2,
      "model.block_size": 16,
      "train.batch_size": 4,
      "train.steps": n_steps,
      "optim.learning_rate": 1e-2,
      "optim.warmup_steps": 0,
      **overrides,
    },
  )
  mesh = mesh_lib.make_mesh(
    ml_collections.ConfigDict({"data": 1, "fsdp": 1, "tensor": 1}), devices=jax.devices()[:1]
  )
  steps = lm.build_steps(config, mesh)
  state = steps.init()
  # A learnable stream: each row counts up from its own offset.
  tokens = (np.arange(17)[None, :] + 5 * np.arange(4)[:, None]) % 64
  batch = jax.device_put(
    {"inputs": tokens[None, :, :-1], "targets": tokens[None, :, 1:]}, steps.batch_sharding
  )
  losses = []
  for _ in range(n_steps):
    state, metrics = steps.train_step(state, batch)
    losses.append(float(metrics["train_loss"]))
  return np.array(losses), state


@pytest.fixture(scope="module")
def fp32():
  return train_losses()


def test_bfloat16_compute_with_float32_params_tracks_float32(fp32):
  ref, _ = fp32
  losses, state = train_losses(**{"model.dtype": "bfloat16"})
  assert np.all(np.isfinite(losses))
  assert losses[-1] < losses[0] - 0.5  # Still learns.
  np.testing.assert_allclose(losses, ref, atol=0.05)
  assert not np.allclose(losses, ref, atol=1e-6)  # bfloat16 really was used.
  assert {leaf.dtype for leaf in jax.tree.leaves(state["params"])} == {jnp.dtype("float32")}
  assert {leaf.dtype for leaf in jax.tree.leaves(state["opt_state"]) if leaf.ndim} == {
    jnp.dtype("float32")
  }


@pytest.mark.parametrize("remat", ["full", "dots_saveable"])
def test_remat_policies_give_identical_losses(fp32, remat):
  ref, _ = fp32
  losses, _ = train_losses(**{"model.remat": remat})
  np.testing.assert_allclose(losses, ref, rtol=0, atol=1e-6)


def test_scanned_layers_with_remat_match_scanned_layers():
  plain, _ = train_losses(n_steps=3, **{"model.scan_layers": True})
  remat, _ = train_losses(n_steps=3, **{"model.scan_layers": True, "model.remat": "full"})
  assert plain[-1] < plain[0]
  np.testing.assert_allclose(remat, plain, rtol=0, atol=1e-6)
