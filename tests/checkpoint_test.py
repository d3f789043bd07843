"""Checkpoints hold the train state, the data iterator and metadata; restore falls back
past an unreadable one; a best slot newer than the resumed step is dropped."""

import grain
import jax
import jax.numpy as jnp
import numpy as np

from llmjax.runs import checkpoint as ckpt_lib


def state(value: float):
  return {"params": {"w": jnp.full((3,), value)}, "step": jnp.array(int(value), jnp.int32)}


def abstract():
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return ckpt_lib.abstract_like(
    jax.eval_shape(lambda: state(0.0)), jax.tree.map(lambda _: sharding, state(0.0))
  )


def iterator():
  return iter(grain.MapDataset.range(100).shuffle(seed=1).to_iter_dataset())


def test_state_iterator_and_meta_round_trip_with_fallback(tmp_path):
  ckpt = ckpt_lib.Checkpointer(tmp_path, keep=5)
  it = iterator()
  for step in (2, 4):
    [next(it) for _ in range(2)]
    ckpt.save(step, state(float(step)), it, {"step": step, "note": "ok"})
  ckpt.save_best(4, state(4.0)["params"], {"step": 4})
  want_next = next(it)
  ckpt.close()
  # Step 4's state is torn: the restore falls back to step 2 and drops best/4 (its future).
  for path in (tmp_path / "checkpoints" / "4" / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  ckpt = ckpt_lib.Checkpointer(tmp_path, keep=5)
  fresh = iterator()
  step, restored, meta = ckpt.restore_latest(abstract(), fresh)
  assert (step, meta) == (2, {"step": 2, "note": "ok"})
  np.testing.assert_array_equal(restored["params"]["w"], [2.0, 2.0, 2.0])
  assert [next(fresh) for _ in range(2)] + [next(fresh)] == [*list(iterator())[2:4], want_next]
  assert (tmp_path / "checkpoints" / "4.corrupt").is_dir()
  assert ckpt_lib.finished_steps(tmp_path / "best") == []
  ckpt.close()


def test_no_checkpoint_restores_none(tmp_path):
  ckpt = ckpt_lib.Checkpointer(tmp_path)
  assert ckpt.restore_latest(abstract(), iterator()) is None
  ckpt.close()
