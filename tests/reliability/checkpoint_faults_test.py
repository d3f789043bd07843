"""Rows 2, 4, 7 and 9: faults around checkpoints never cost more than the steps since the
last finished checkpoint, and the run that resumes ends bitwise where the reference ends.

All runs of this file start together (a few at a time) in one module fixture.
"""

import math
import re
import shutil

import numpy as np
import pytest
import reliability_harness as h

pytestmark = pytest.mark.slow

KILL_IN_SAVE = 12  # After the evaluation of step 10 saved best/10, before checkpoint 12.
ENOSPC_IN_SAVE = 8
NAN_STEP = 8  # A checkpoint step: the NaN state must not be saved.


def truncate_arrays(step_dir):
  """Cuts every array data file of a checkpoint's state to half its size."""
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
  assert files
  for path in files:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def runs(base, corpus, reference):
  work = {
    name: base / f"ckpt-{name}" for name in ("kill", "enospc", "nan", "corrupt", "all_corrupt")
  }
  for name in ("corrupt", "all_corrupt"):
    shutil.copytree(reference, work[name])
  truncate_arrays(work["corrupt"] / "checkpoints" / str(h.STEPS))
  for step in range(h.CHECKPOINT_EVERY, h.STEPS + 1, h.CHECKPOINT_EVERY):
    truncate_arrays(work["all_corrupt"] / "checkpoints" / str(step))
  disk = {"all_corrupt": h.steps_on_disk(work["all_corrupt"])}
  first = h.run_many(
    base,
    [
      {"argv": h.train_argv(corpus, work["kill"]), "faults": {"kill_in_save": KILL_IN_SAVE}},
      {"argv": h.train_argv(corpus, work["enospc"]), "faults": {"enospc_in_save": ENOSPC_IN_SAVE}},
      {"argv": h.train_argv(corpus, work["nan"], train__debug_nan_step=NAN_STEP)},
      {"argv": h.train_argv(corpus, work["corrupt"])},
      {"argv": h.train_argv(corpus, work["all_corrupt"])},
    ],
  )
  out = dict(zip(("kill", "enospc", "nan", "corrupt", "all_corrupt"), first))
  disk.update({name: h.steps_on_disk(work[name]) for name in ("kill", "enospc", "nan")})
  states = {
    name: h.load_state(work[name], step)
    for name, step in (
      ("kill", KILL_IN_SAVE - h.CHECKPOINT_EVERY),
      ("enospc", ENOSPC_IN_SAVE - h.CHECKPOINT_EVERY),
      ("nan", NAN_STEP - h.CHECKPOINT_EVERY),
    )
  }
  metrics_nan = h.metrics(work["nan"])
  again = h.run_many(
    base, [{"argv": h.train_argv(corpus, work[name])} for name in ("kill", "enospc")]
  )
  out.update({"kill_again": again[0], "enospc_again": again[1]})
  return work, out, disk, states, metrics_nan


def resumed_from(result):
  match = re.search(r"resuming from step (\d+)", result.stdout)
  return int(match.group(1)) if match else None


def test_kill9_during_save_keeps_previous_checkpoint_and_uses_it(runs, reference):
  work, out, disk, states, _ = runs
  previous = KILL_IN_SAVE - h.CHECKPOINT_EVERY
  assert out["kill"].returncode == -9, out["kill"].describe()
  # Killed while the temporary directory of the new checkpoint existed:
  assert f"{KILL_IN_SAVE}.orbax-checkpoint-tmp" in disk["kill"], disk["kill"]
  assert str(KILL_IN_SAVE) not in disk["kill"]
  h.assert_trees_equal(states["kill"], h.load_state(reference, previous))
  assert out["kill_again"].returncode == 0, out["kill_again"].describe()
  assert resumed_from(out["kill_again"]) == previous
  assert h.steps_on_disk(work["kill"]) == h.steps_on_disk(reference)
  assert h.metrics(work["kill"]) == h.metrics(reference)
  h.assert_trees_equal(h.load_state(work["kill"], h.STEPS), h.load_state(reference, h.STEPS))


def test_truncated_latest_checkpoint_falls_back_with_a_warning_naming_it(runs, reference):
  work, out, _, _, _ = runs
  result = out["corrupt"]
  bad = work["corrupt"] / "checkpoints" / str(h.STEPS)
  assert result.returncode == 0, result.describe()
  assert f"Checkpoint {bad} is unreadable" in result.stderr, result.describe()
  assert f"the unreadable {bad} is kept as {bad}.corrupt" in result.stderr
  assert resumed_from(result) == h.STEPS - h.CHECKPOINT_EVERY
  assert f"{h.STEPS}.corrupt" in h.steps_on_disk(work["corrupt"])
  # The steps after the fallback were trained again, bit for bit.
  assert h.metrics(work["corrupt"]) == h.metrics(reference)
  h.assert_trees_equal(h.load_state(work["corrupt"], h.STEPS), h.load_state(reference, h.STEPS))


def test_no_readable_checkpoint_left_is_a_clear_error_that_renames_nothing(runs):
  work, out, disk, _, _ = runs
  line = h.error_line(out["all_corrupt"])
  assert line.startswith(
    f"Error: No readable checkpoint in {work['all_corrupt']}/checkpoints: step {h.STEPS}: "
  ), line
  assert f"step {h.CHECKPOINT_EVERY}: " in line and "Nothing was renamed or deleted" in line
  assert h.steps_on_disk(work["all_corrupt"]) == disk["all_corrupt"]


def test_nan_loss_stops_naming_the_step_and_last_good_checkpoint_survives(runs, reference):
  _, out, disk, states, metrics_nan = runs
  previous = NAN_STEP - h.CHECKPOINT_EVERY
  line = h.error_line(out["nan"])
  assert line.startswith(f"Error: Loss became nan (grad norm nan) at step {NAN_STEP}. "), line
  assert f"the last good checkpoint (step {previous}) is intact" in line
  assert disk["nan"] == [str(previous)]
  h.assert_trees_equal(states["nan"], h.load_state(reference, previous))
  assert all(np.isfinite(x).all() for x in jax_leaves(states["nan"]))
  assert [m["step"] for m in metrics_nan if "train_loss" in m] == list(range(1, NAN_STEP))
  assert all(math.isfinite(m["train_loss"]) for m in metrics_nan if "train_loss" in m)


def test_disk_full_during_save_is_a_clear_error_and_previous_checkpoint_intact(runs, reference):
  work, out, disk, states, _ = runs
  previous = ENOSPC_IN_SAVE - h.CHECKPOINT_EVERY
  line = h.error_line(out["enospc"])
  assert line.startswith(
    f"Error: Saving checkpoint {work['enospc']}/checkpoints/"
    f"{ENOSPC_IN_SAVE} failed (OSError: [Errno 28] No space left on "
    "device"
  ), line
  assert line.endswith(
    f"The previous checkpoint (step {previous}) is intact. Free disk space "
    "and re-run the same command to resume."
  ), line
  assert [n for n in disk["enospc"] if n.isdigit()] == [str(previous)]
  h.assert_trees_equal(states["enospc"], h.load_state(reference, previous))
  assert out["enospc_again"].returncode == 0, out["enospc_again"].describe()
  assert resumed_from(out["enospc_again"]) == previous
  assert h.metrics(work["enospc"]) == h.metrics(reference)


def jax_leaves(tree):
  import jax  # pylint: disable=import-outside-toplevel

  return jax.tree.leaves(tree)
