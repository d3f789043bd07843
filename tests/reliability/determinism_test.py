"""Rows 6 and 16: the seed alone decides a run; a checkpoint written on 8 devices restores,
samples and resumes on 1."""

import re
import shutil

import jax
import numpy as np
import pytest
import reliability_harness as h
from flax import nnx

from llmjax import api

pytestmark = pytest.mark.slow

MESH_STEPS = 4


@pytest.fixture(scope="module")
def runs(base, corpus, reference):
  work = {name: base / f"det-{name}" for name in ("same", "other_seed", "mesh8")}
  results = h.run_many(
    base,
    [
      # Another process, another Python hash seed: nothing may depend on either.
      {"argv": h.train_argv(corpus, work["same"]), "env": {"PYTHONHASHSEED": "12345"}},
      {"argv": h.train_argv(corpus, work["other_seed"], train__seed=1)},
      # FSDP over 2 of 8 devices: parameters are sharded in the checkpoint.
      {
        "argv": h.train_argv(
          corpus, work["mesh8"], train__steps=MESH_STEPS, train__batch_size=8, mesh__fsdp=2
        ),
        "devices": 8,
      },
    ],
  )
  out = dict(zip(work, results))
  for name, result in out.items():
    assert result.returncode == 0, f"{name}: {result.describe()}"
  mesh8_state = h.load_state(work["mesh8"], MESH_STEPS)
  work["resume1"] = base / "det-resume1"
  shutil.copytree(work["mesh8"], work["resume1"])
  out["resume1"] = h.run(
    base,
    h.train_argv(
      corpus, work["resume1"], train__steps=MESH_STEPS + 2, train__batch_size=8, mesh__fsdp=1
    ),
  )
  return work, out, mesh8_state


def test_same_seed_gives_identical_metrics_params_and_batches(runs, reference):
  work, _, _ = runs
  assert h.metrics(work["same"]) == h.metrics(reference)
  assert h.batch_hashes(work["same"]) == h.batch_hashes(reference)
  h.assert_trees_equal(h.load_state(work["same"], h.STEPS), h.load_state(reference, h.STEPS))


def test_different_seed_gives_different_init_data_order_and_losses(runs, reference):
  work, _, _ = runs
  ours, theirs = h.metrics(work["other_seed"]), h.metrics(reference)
  assert ours[0]["train_loss"] != theirs[0]["train_loss"]
  assert all(
    a.get("train_loss") != b.get("train_loss") for a, b in zip(ours, theirs) if "train_loss" in a
  )
  mine, ref = dict(h.batch_hashes(work["other_seed"])), dict(h.batch_hashes(reference))
  assert sum(mine[s] == ref[s] for s in ref) <= 1  # Another order of the same windows.
  params = h.load_state(work["other_seed"], h.STEPS)["params"]
  ref_params = h.load_state(reference, h.STEPS)["params"]
  assert not any(
    np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params))
  )


def test_checkpoint_from_8_devices_samples_on_1(runs):
  work, _, saved = runs
  model, _, step = api.load_model(work["mesh8"])
  assert step == MESH_STEPS
  params = nnx.to_pure_dict(nnx.state(model))
  assert {len(x.sharding.device_set) for x in jax.tree.leaves(params)} == {1}
  h.assert_trees_equal(jax.tree.map(np.asarray, params), saved["params"])
  sampler = api.Sampler(work["mesh8"])
  assert len(sampler.generate_tokens([1, 2, 3], 5, temperature=0.0)[0]) == 5


def test_checkpoint_from_8_devices_resumes_on_1(runs):
  work, out, _ = runs
  result = out["resume1"]
  assert result.returncode == 0, result.describe()
  assert re.search(
    rf"mesh {{'data': 1, 'fsdp': 1, 'tensor': 1}} .* resuming from step "
    rf"{MESH_STEPS}\b",
    result.stdout,
  ), result.describe()
  rows = [m for m in h.metrics(work["resume1"]) if "train_loss" in m]
  assert [m["step"] for m in rows] == list(range(1, MESH_STEPS + 3))
  assert all(np.isfinite(m["train_loss"]) for m in rows)
