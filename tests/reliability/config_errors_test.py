"""Rows 8, 10 and 14: a changed model, a config typo or a busy or unwritable workdir is
refused before any work, with one line naming the problem and the fix."""

import os
import shutil
import textwrap

import pytest
import reliability_harness as h

from llmjax import api
from llmjax.config import load as config_load
from llmjax.runs import workdir as workdir_lib
from llmjax.train import lm
from llmjax.util import errors


@pytest.fixture(scope="module")
def refused(base, corpus, reference, tmp_path_factory):
  """CLI runs refused at the start: changed model shape, locked and unwritable workdirs."""
  root = tmp_path_factory.mktemp("refused")
  work = {"shape": root / "shape", "locked": root / "locked", "unwritable": root / "a-file" / "run"}
  shutil.copytree(reference, work["shape"])
  (root / "a-file").write_text("")
  before = {name: sorted(p.name for p in work[name].iterdir()) for name in ("shape",)}
  with workdir_lib.workdir_lock(work["locked"]):  # Held like a running job would.
    results = h.run_many(
      base,
      [
        {"argv": h.train_argv(corpus, work["shape"], model__n_embd=32)},
        {"argv": h.train_argv(corpus, work["locked"])},
        {"argv": h.train_argv(corpus, work["unwritable"])},
      ],
    )
  return work, dict(zip(("shape", "locked", "unwritable"), results)), before


def tiny_config(corpus, **overrides):
  """The tiny run's config in this process (8 devices: batch 8)."""
  config = config_load.load_config("configs/shakespeare.py:smoke")
  config.unlock()
  config_load.apply_overrides(
    config, {**h.TINY, "data.path": str(corpus), "train.batch_size": 8, **overrides}
  )
  return config


# --- row 8: resume with a changed model --------------------------------------------------------


def test_resume_with_changed_model_config_names_the_key(refused, reference):
  work, results, before = refused
  assert h.error_line(results["shape"]) == (
    "Error: The workdir holds a run with model.n_embd=16 but the config now says 32. Use a "
    "new --workdir, or set model.n_embd=16 to resume."
  )
  assert sorted(p.name for p in work["shape"].iterdir()) == before["shape"]
  assert h.metrics(work["shape"]) == h.metrics(reference)


@pytest.mark.parametrize(
  "overrides, first",
  [
    (
      {"model.n_embd": 32},
      "has ['params']['h'][0]['attn']['c_attn'] of shape (16, 3, 2, 8) "
      "but the model expects shape (32, 3, 2, 16)",
    ),
    (
      {"model.n_layer": 2},
      "has no array ['params']['h'][1]['attn']['c_attn'] but the model expects shape (16, 3, 2, 8)",
    ),
  ],
)
def test_resume_with_changed_parameter_shapes_names_the_first_parameter(
  base, corpus, reference, tmp_path, monkeypatch, overrides, first
):
  # Without config.json and identity.json (or with a model key the checks do not know), the
  # checkpoint's own shapes are compared before anything is restored.
  monkeypatch.setenv("LLMJAX_CACHE", str(base / "llmjax-cache"))
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  (workdir / "config.json").unlink()
  (workdir / "identity.json").unlink()
  with pytest.raises(errors.CheckpointError) as e:
    lm.train(tiny_config(corpus, **overrides), workdir)
  assert str(e.value) == (
    f"Checkpoint {workdir}/checkpoints/{h.STEPS} {first}: the model changed since it was "
    "written. Use a new --workdir, or restore the model config of that run."
  )
  assert h.steps_on_disk(workdir) == h.steps_on_disk(reference)


# --- row 10: unknown config keys and wrong types --------------------------------------------


def config_file(tmp_path, line: str) -> str:
  path = tmp_path / "mine.py"
  path.write_text(
    textwrap.dedent(f'''\
      """An experiment config with a mistake."""
      from llmjax.config import schema as config_base


      def get_config(arg=None):
        c = config_base.base_config()
        {line}
        return c
      ''')
  )
  return str(path)


@pytest.mark.parametrize(
  "args, message",
  [
    (
      ["--config=configs/shakespeare.py:smoke", "--config.train.stepz=5"],
      "Config error: Unknown config key 'train.stepz'. Did you mean 'train.steps'? List every "
      "key with --config_help.",
    ),
    (
      ["--config=configs/shakespeare.py:smoke", "--config.optim.learnig_rate=0.1"],
      "Config error: Unknown config key 'optim.learnig_rate'. Did you mean "
      "'optim.learning_rate'? List every key with --config_help.",
    ),
    (
      ["--config=configs/shakespeare.py:smoke", "--config.train.steps=ten"],
      "Config error: --config.train.steps=ten: train.steps takes an integer (it is 20 now).",
    ),
    (
      ["--config=configs/shakespeare.py:smoke", "--config.train.log_batch_hashes=maybe"],
      "Config error: --config.train.log_batch_hashes=maybe: train.log_batch_hashes takes true "
      "or false (it is False now).",
    ),
    (
      ["--config=configs/shakespeare.py:smok"],
      "Config error: Unknown variant 'smok' of configs/shakespeare.py; use cpu or smoke.",
    ),
    (
      ["--config=configs/nope.py"],
      "Config error: Config file 'configs/nope.py' does not exist. Pass --config=configs/"
      "NAME.py[:variant]; available: ",
    ),
  ],
)
def test_cli_config_mistake_is_one_line_before_any_work(base, tmp_path, args, message):
  result = h.run(base, args + [f"--workdir={tmp_path / 'run'}"])
  assert h.error_line(result).startswith(message), result.describe()
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
  "line, message",
  [
    (
      "c.train.stepz = 5  # A typo.",
      "Config error: Unknown config key 'train.stepz'. Did you mean 'train.steps'?",
    ),
    (
      "c.model.n_embd = '384'  # A string.",
      "Config error: --config={path}: TypeError: Could not override field 'n_embd' "
      "(reference). 384 is of original type <class 'str'> and cannot be casted to type "
      "<class 'int'>",
    ),
  ],
)
def test_mistake_inside_a_config_file_is_one_line_before_any_work(base, tmp_path, line, message):
  path = config_file(tmp_path, line)
  result = h.run(base, [f"--config={path}", f"--workdir={tmp_path / 'run'}"])
  assert h.error_line(result).startswith(message.format(path=path)), result.describe()
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
  "kwargs, message",
  [
    ({"train__stepz": 5}, "Unknown config key 'train.stepz'. Did you mean 'train.steps'?"),
    (
      {"overrides": {"model.n_emb": 64}},
      "Unknown config key 'model.n_emb'. Did you mean 'model.n_embd'?",
    ),
    ({"train__steps": "ten"}, "Config key 'train.steps': Could not override field 'steps'"),
    ({"train__steps": True}, "Config key 'train.steps' must be int, got True (bool)."),
  ],
)
def test_trainer_override_mistake_raises_before_any_work(tmp_path, kwargs, message):
  with pytest.raises(errors.ConfigError) as e:
    api.Trainer(str(tmp_path / "run"), config="configs/shakespeare.py:smoke", **kwargs)
  assert str(e.value).startswith(message)
  assert not (tmp_path / "run").exists()


# --- row 14: a workdir that is locked or not writable ---------------------------------------


def test_workdir_locked_by_a_running_job_is_refused(refused):
  work, results, _ = refused
  assert h.error_line(results["locked"]) == (
    f"Error: Workdir {work['locked']} is in use by another running job; wait for it or "
    "pick another --workdir."
  )
  assert sorted(p.name for p in work["locked"].iterdir()) == [".lock"]


def test_workdir_not_writable_is_refused(refused):
  work, results, _ = refused
  line = h.error_line(results["unwritable"])
  assert line.startswith(
    f"Error: Workdir {work['unwritable']} is not writable ([Errno 20] Not a directory"
  ), line
  assert line.endswith("Pick another --workdir."), line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_read_only_workdir_is_refused(corpus, tmp_path):
  tmp_path.joinpath("ro").mkdir(mode=0o555)
  with pytest.raises(errors.TrainingError, match=r"is not writable \(\[Errno 13\] Permission"):
    lm.train(tiny_config(corpus), tmp_path / "ro")
