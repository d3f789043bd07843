"""benchmarks/gpu_suite.py runs every part end to end on CPU with --smoke (tiny shapes), so
the suite is known to work before a GPU is at hand.

Three short training runs, a notes run (spaCy tagging included) and six decode programs:
two minutes on two cores shared with other jobs (load average 9), so those tests are marked
slow. The timing arithmetic, the skips and the goals are checked on made-up records."""

import json
import math
import pathlib
import sys

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

from benchmarks import gpu_suite, timing  # pylint: disable=wrong-import-position


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  return gpu_suite.run_suite(gpu_suite.PARTS, smoke=True, root=tmp_path_factory.mktemp("suite"))


@pytest.mark.slow
def test_every_part_runs_and_the_result_is_json(smoke):
  assert list(smoke["parts"]) == list(gpu_suite.PARTS)
  errors = {name: part["error"] for name, part in smoke["parts"].items() if "error" in part}
  assert errors == {}
  assert json.loads(json.dumps(smoke)) == smoke
  assert smoke["smoke"] is True and smoke["device_count"] == jax.device_count()


@pytest.mark.slow
def test_training_parts_report_step_times_from_the_runs(smoke):
  xl, small = smoke["parts"]["xl_step"], smoke["parts"]["train_124m"]
  assert xl["fsdp"] == jax.device_count() and xl["timed_steps"] == 3
  assert small["timed_steps"] == 3
  for part in (xl, small):
    # Smoke steps can all end within one millisecond stamp: then the time is missing and
    # named, never divided by.
    for key in ("step_s", "tokens_per_s"):
      assert (part[key] is None) == (key in part["too_fast_to_time"]), key
      assert part[key] is None or part[key] > 0, key
  assert small["flops_per_token"] == gpu_suite.flops_per_token(2, 32, 64, 320)
  # No bfloat16 peak is known for a CPU: MFU is left out rather than guessed.
  assert small["mfu"] is None and small["peak_tflops_bf16"] is None
  assert math.isfinite(small["final_train_loss"])
  notes = smoke["parts"]["notes"]
  assert notes["steps"] == 4 and math.isfinite(notes["final_train_loss"])


@pytest.mark.slow
def test_decode_part_covers_both_dtypes_and_the_reference(smoke):
  decode = smoke["parts"]["decode"]
  for key in ("float32_batch1", "bfloat16_batch1", "reference_float32_batch1"):
    # At smoke sizes the per-token time is a difference of two tiny timings, often zero or
    # negative: such a figure is null and named, any other is positive.
    run = decode[key]
    assert run["batch"] == 1 and run["new_tokens"] == 8 and run["repeats"] == 2, key
    for field in ("tokens_per_s", "per_step_ms", "decode_tokens_per_s"):
      assert (run[field] is None) == (field in run["too_fast_to_time"]), (key, field)
      assert run[field] is None or run[field] > 0, (key, field)
  ratio = decode["generator_over_reference_batch1"]
  assert ratio is None or ratio > 0


def test_goals_apply_only_where_they_are_defined():
  result = {
    "wall_s": 100.0,
    "smoke": False,
    "device_kind": "NVIDIA H100 80GB HBM3",
    "parts": {
      "train_124m": {"mfu": 0.5},
      "decode": {
        "float32_batch1": {"tokens_per_s": 900.0},
        "bfloat16_batch1": {"tokens_per_s": 1200.0},
      },
    },
  }
  assert gpu_suite.goals(result) == {
    "wall_under_8_min": True,
    "mfu_124m>=0.45": True,
    "decode_batch1>=1000_tokens_per_s": True,
  }
  assert gpu_suite.device_peak("NVIDIA H200") == 989.4e12
  assert gpu_suite.device_peak("cpu") is None


def _metrics(tmp_path, stamps):
  lines = [
    json.dumps({"step": i + 1, "train_loss": 1.0, "elapsed_s": t}) for i, t in enumerate(stamps)
  ]
  (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_steady_timing_takes_the_window_span(tmp_path):
  _metrics(tmp_path, [5.0, 5.5, 5.6, 5.8, 6.0, 6.3])
  out = gpu_suite.steady_timing(tmp_path, skip=2, per_step=100)
  assert out["timed_steps"] == 3 and out["step_s"] == pytest.approx(0.7 / 3, abs=1e-5)
  assert out["step_s_median"] == pytest.approx(0.2)
  assert out["tokens_per_s"] == pytest.approx(100 / (0.7 / 3), abs=0.1)
  assert out["too_fast_to_time"] == []


def test_steady_timing_of_equal_stamps_is_too_fast_not_a_division_by_zero(tmp_path):
  # What a 2-core machine wrote for the smoke xl_step: the last stamps equal at 1 ms.
  _metrics(tmp_path, [3.2, 3.25, 3.251, 3.251])
  out = gpu_suite.steady_timing(tmp_path, skip=2, per_step=32)
  assert out["timed_steps"] == 1
  assert out["step_s"] is None and out["step_s_median"] is None and out["tokens_per_s"] is None
  assert out["too_fast_to_time"] == ["step_s", "step_s_median", "tokens_per_s"]
  _metrics(tmp_path, [1.0, 2.0])  # Nothing left after the compilation steps.
  assert gpu_suite.steady_timing(tmp_path, skip=2, per_step=32)["timed_steps"] == 0


def test_timing_helpers_refuse_times_that_measured_nothing():
  assert timing.rate(10, 0.5) == 20 and timing.rate(10, 3.0, 2) == 3.33
  for t in (0.0, -1e-6, None, float("nan"), float("inf")):
    assert timing.rate(10, t) is None and timing.ratio(1.0, t) is None
  assert timing.ratio(0.0, 1.0) is None and timing.ratio(3.0, 2.0) == 1.5
  assert timing.median_ratio([1.0, 0.0, 4.0, 9.0], [1.0, 1.0, 2.0, 3.0]) == 2.0
  assert timing.median_ratio([0.0], [1.0]) is None
  assert timing.flag({"a": None, "b": 1.0, "c": None}, "c", "b", "a")["too_fast_to_time"] == [
    "a",
    "c",
  ]


def test_a_part_without_its_modules_or_past_the_deadline_is_skipped(monkeypatch, tmp_path):
  monkeypatch.setattr(gpu_suite, "NEEDS", {"notes": ("llmjax_no_such_module",)})
  seen = []
  result = gpu_suite.run_suite(["notes"], smoke=True, root=tmp_path, on_part=seen.append)
  assert result["parts"]["notes"]["skipped"] == "not installed here: llmjax_no_such_module"
  assert len(seen) == 1 and "error" not in result["parts"]["notes"]
  # A deadline already passed when the second part would start: nothing after it runs.
  monkeypatch.setattr(gpu_suite, "part_decode", lambda smoke, workdir: {"ran": True})
  monkeypatch.setattr(gpu_suite.time, "perf_counter", iter(range(0, 1000, 10)).__next__)
  result = gpu_suite.run_suite(["decode", "notes"], smoke=True, root=tmp_path, deadline_s=5)
  assert result["parts"]["decode"]["skipped"].startswith("not started")
  assert list(result["parts"]) == ["decode", "notes"]


def test_goals_leave_out_what_was_too_fast_to_time():
  result = {
    "wall_s": 500.0,
    "smoke": False,
    "device_kind": "NVIDIA H200",
    "parts": {
      "xl_step": {"error": "XlaRuntimeError: RESOURCE_EXHAUSTED"},
      "train_124m": {"mfu": None},
      "decode": {
        "float32_batch1": {"tokens_per_s": None},
        "bfloat16_batch1": {"tokens_per_s": 1500.0},
      },
    },
  }
  assert gpu_suite.goals(result) == {
    "wall_under_8_min": False,
    "xl_step_fits": False,
    "decode_batch1>=1000_tokens_per_s": True,
  }
