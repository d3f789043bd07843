"""Rows 1, 3 and 5: kill -9, SIGTERM and SIGINT lose nothing and change nothing.

One workdir goes through six processes: kill -9 at three seeded random steps, SIGTERM,
SIGINT, then a run to the end. Its metrics, final train state and batch order must equal
those of the reference run, which was never interrupted.
"""

import random
import re
import signal

import pytest
import reliability_harness as h

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chain(base, corpus):
  workdir = base / "chain"
  rng = random.Random(9)
  kills = sorted(rng.sample(range(2, 13), 3))
  term = rng.randint(kills[-1] + 1, 15)
  plan = [("SIGKILL", k) for k in kills] + [
    ("SIGTERM", term),
    ("SIGINT", rng.randint(term + 1, 17)),
  ]
  argv = h.train_argv(corpus, workdir)
  segments = []
  for name, step in plan:
    proc = h.start(base, argv, faults={"step_delay": 0.05})
    result = h.interrupt_at(proc, workdir, step, getattr(signal, name))
    segments.append(
      {
        "signal": name,
        "at": step,
        "run": result,
        "disk": h.steps_on_disk(workdir),
        "hashes": h.batch_hashes(workdir),
      }
    )
  final = h.run(base, argv)
  segments.append(
    {
      "signal": None,
      "run": final,
      "disk": h.steps_on_disk(workdir),
      "hashes": h.batch_hashes(workdir),
    }
  )
  return workdir, segments


def resumed_from(result: h.Run) -> int:
  match = re.search(r"resuming from step (\d+)", result.stdout)
  return int(match.group(1)) if match else 0


def test_kill9_at_three_random_steps_resumes_bitwise(chain, reference):
  workdir, segments = chain
  plan = [(s["signal"], s.get("at")) for s in segments]
  for before, after in zip(segments, segments[1:]):
    if before["signal"] == "SIGKILL":
      assert before["run"].returncode == -signal.SIGKILL, before["run"].describe()
      newest = max(int(n) for n in before["disk"] if n.isdigit())
      assert resumed_from(after["run"]) == newest, (plan, after["run"].describe())
  assert segments[-1]["run"].returncode == 0, segments[-1]["run"].describe()
  assert h.metrics(workdir) == h.metrics(reference), plan
  h.assert_trees_equal(h.load_state(workdir, h.STEPS), h.load_state(reference, h.STEPS))


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_signal_saves_exits_cleanly_and_rerun_resumes(chain, name):
  _, segments = chain
  index = next(i for i, s in enumerate(segments) if s["signal"] == name)
  result = segments[index]["run"]
  assert result.returncode == 0, result.describe()
  match = re.search(
    rf"Received {name}: saved checkpoint (\d+); re-run the same command to "
    "resume",
    result.stdout,
  )
  assert match, result.describe()
  saved = int(match.group(1))
  assert saved >= segments[index]["at"]
  assert str(saved) in segments[index]["disk"]
  assert resumed_from(segments[index + 1]["run"]) == saved


def test_batch_log_shows_no_batch_repeated_or_skipped_across_resumes(chain, reference):
  _, segments = chain
  want = dict(h.batch_hashes(reference))
  assert sorted(want) == list(range(1, h.STEPS + 1))
  assert len(set(want.values())) == h.STEPS  # Every step trains on a different batch.
  for segment in segments:
    # What each process consumed, resumed ones included: steps 1, 2, ... in order, each
    # with the batch the uninterrupted run used at that step.
    steps = [step for step, _ in segment["hashes"]]
    assert steps == list(range(1, len(steps) + 1)), (segment["signal"], steps)
    assert all(want[step] == digest for step, digest in segment["hashes"]), segment["signal"]
  assert h.batch_hashes(chain[0]) == h.batch_hashes(reference)
