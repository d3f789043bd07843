"""benchmarks/gpu_suite.py runs every part end to end on CPU with --smoke (tiny shapes), so
the suite is known to work before a GPU is at hand.

Three short training runs, a notes run (spaCy tagging included) and six decode programs:
two minutes on two cores shared with other jobs (load average 9), so it is marked slow."""

import json
import math
import pathlib
import sys

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

from benchmarks import gpu_suite  # pylint: disable=wrong-import-position

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  return gpu_suite.run_suite(gpu_suite.PARTS, smoke=True, root=tmp_path_factory.mktemp("suite"))


def test_every_part_runs_and_the_result_is_json(smoke):
  assert list(smoke["parts"]) == list(gpu_suite.PARTS)
  errors = {name: part["error"] for name, part in smoke["parts"].items() if "error" in part}
  assert errors == {}
  assert json.loads(json.dumps(smoke)) == smoke
  assert smoke["smoke"] is True and smoke["device_count"] == jax.device_count()


def test_training_parts_report_step_times_from_the_runs(smoke):
  xl, small = smoke["parts"]["xl_step"], smoke["parts"]["train_124m"]
  assert xl["fsdp"] == jax.device_count() and xl["step_s"] > 0
  assert small["step_s"] > 0 and small["tokens_per_s"] > 0
  assert small["flops_per_token"] == gpu_suite.flops_per_token(2, 32, 64, 320)
  # No bfloat16 peak is known for a CPU: MFU is left out rather than guessed.
  assert small["mfu"] is None and small["peak_tflops_bf16"] is None
  assert math.isfinite(small["final_train_loss"])
  notes = smoke["parts"]["notes"]
  assert notes["steps"] == 4 and math.isfinite(notes["final_train_loss"])


def test_decode_part_covers_both_dtypes_and_the_reference(smoke):
  decode = smoke["parts"]["decode"]
  for key in ("float32_batch1", "bfloat16_batch1", "reference_float32_batch1"):
    # At smoke sizes the per-token time is a difference of two tiny timings: any finite
    # number (even a negative one) is a valid smoke result; only the structure is checked.
    assert math.isfinite(decode[key]["tokens_per_s"]) and decode[key]["batch"] == 1, key
  assert math.isfinite(decode["generator_over_reference_batch1"])


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
