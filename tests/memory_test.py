"""The memory check: a step that cannot fit stops the run before it starts, in one line;
an out-of-memory error mid-run is reported the same way and keeps the last checkpoint."""

import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent / "reliability"))
import reliability_harness as h  # pylint: disable=wrong-import-position

from llmjax.config import load as config_load  # pylint: disable=wrong-import-position
from llmjax.runs import checkpoint as ckpt_lib  # pylint: disable=wrong-import-position
from llmjax.train import (
  lm,  # pylint: disable=wrong-import-position
  memory,  # pylint: disable=wrong-import-position
  runner,  # pylint: disable=wrong-import-position
)
from llmjax.util import errors  # pylint: disable=wrong-import-position


def tiny_config(corpus, **extra):
  config = ml_collections.ConfigDict(
    config_load.load_config("configs/shakespeare.py:smoke").to_dict()
  )
  config_load.apply_overrides(
    config,
    {
      **h.TINY,
      "data.path": str(corpus),
      "train.steps": 6,
      "train.checkpoint_every": 2,
      "mesh.num_devices": 1,
      **extra,
    },
  )
  return config


def test_step_bytes_counts_arguments_outputs_and_temporaries():
  x = jnp.ones((256, 256), jnp.float32)
  compiled = jax.jit(lambda a: (a @ a).sum(0)).lower(x).compile()
  need = memory.step_bytes(compiled)
  assert need >= 256 * 256 * 4 + 256 * 4  # The argument and the output at least.
  donated = jax.jit(lambda a: a * 2, donate_argnums=0).lower(x).compile()
  assert memory.step_bytes(donated) < 2 * 256 * 256 * 4 + 1024  # Output aliases the input.


def test_a_step_over_the_limit_is_refused_before_any_step(tmp_path):
  corpus = h.write_corpus(tmp_path / "corpus.txt")
  config = tiny_config(corpus, **{"train.memory_limit_gib": 1e-6})
  with pytest.raises(errors.TrainingError) as info:
    lm.train(config, tmp_path / "run")
  message = str(info.value)
  assert "\n" not in message
  assert "GiB per device but train.memory_limit_gib allows 0.00 GiB; nothing was trained" in message
  assert "train.grad_accum (now 1)" in message and "model.remat=full" in message
  records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
  assert not [r for r in records if "train_loss" in r]
  assert ckpt_lib.finished_steps(tmp_path / "run" / "checkpoints") == []


def test_the_command_line_prints_one_line(tmp_path):
  corpus = h.write_corpus(tmp_path / "corpus.txt")
  result = h.run(tmp_path, h.train_argv(corpus, tmp_path / "run", train__memory_limit_gib=0.000001))
  line = h.error_line(result)
  assert line.startswith("Error: One training step needs about") and "To fit:" in line


def test_out_of_memory_mid_run_names_the_step_and_keeps_the_checkpoint(tmp_path, monkeypatch):
  corpus = h.write_corpus(tmp_path / "corpus.txt")
  real = runner._Run.step_fn  # pylint: disable=protected-access

  def failing_at_step_4(self, jitted, state, batch):
    compiled = real(self, jitted, state, batch)

    def step(state, batch):
      if int(state["step"]) == 3:
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 27362463112 bytes.")
      return compiled(state, batch)

    return step

  monkeypatch.setattr(runner._Run, "step_fn", failing_at_step_4)  # pylint: disable=protected-access
  with pytest.raises(
    errors.TrainingError,
    match=r"^Out of memory at step 4 .* The last "
    r"checkpoint \(step 2\) is kept\. To fit: ",
  ):
    lm.train(tiny_config(corpus), tmp_path / "run")
  assert ckpt_lib.finished_steps(tmp_path / "run" / "checkpoints") == [2]
