"""No job prints a traceback for a problem on the user's side: a missing file, an
unreachable hub, a step that cannot fit in memory. Each is one line and exit status 1."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent / "reliability"))
import reliability_harness as h  # pylint: disable=wrong-import-position

pytestmark = pytest.mark.slow
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

CASES = {
  # job: (config, overrides, words the one line must hold)
  "train-missing-file": (
    "configs/shakespeare.py:smoke",
    {
      "data.source": "file",
      "data.path": "/no/such/book.txt",
      "data.tokenizer": "char",
      "model.vocab_size": 257,
    },
    "/no/such/book.txt",
  ),
  "progressive-missing-file": (
    "configs/progressive.py:smoke",
    {
      "data.source": "file",
      "data.path": "/no/such/math.txt",
      "data.max_tokens": 0,
      "data.tokenizer": "char",
      "model.vocab_size": 257,
    },
    "/no/such/math.txt",
  ),
  "classify-missing-file": (
    "configs/arena_classifier.py:smoke",
    {"arena.source": "csv", "arena.path": "/no/such/arena.csv"},
    "/no/such/arena.csv",
  ),
  "classify-unreachable-hub": (
    "configs/arena_classifier.py:smoke",
    {"arena.source": "hf", "arena.path": "lmsys/lmsys-arena-human-preference-55k"},
    "lmsys/lmsys-arena-human-preference-55k",
  ),
  "train-out-of-memory": (
    "configs/shakespeare.py:smoke",
    {
      **{k: v for k, v in h.TINY.items()},
      "data.path": "CORPUS",
      "train.memory_limit_gib": 0.000001,
    },
    "To fit:",
  ),
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  base = tmp_path_factory.mktemp("user-errors")
  corpus = h.write_corpus(base / "corpus.txt")
  jobs = []
  for name, (spec, values, _) in CASES.items():
    values = {k: (str(corpus) if v == "CORPUS" else v) for k, v in values.items()}
    jobs.append({"argv": h.config_argv(spec, base / name, values), "env": OFFLINE})
  return dict(zip(CASES, h.run_many(base, jobs, parallel=3)))


@pytest.mark.parametrize("name", list(CASES))
def test_user_side_problem_is_one_line(results, name):
  line = h.error_line(results[name])
  assert line.startswith("Error: ") and CASES[name][2] in line, results[name].describe()
