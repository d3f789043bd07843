"""End-to-end training through the real trainer on a tiny model and a local text."""

import json

import jax
import numpy as np
import pytest

from llmjax import api
from llmjax.config import load as config_load
from llmjax.train import lm
from llmjax.train import metrics as metrics_lib
from llmjax.util import errors

TEXT = (
  "It is a truth universally acknowledged, that a single man in possession of a good "
  "fortune, must be in want of a wife.\n"
) * 40


def tiny_config(text_path, **overrides):
  config = config_load.load_config("configs/shakespeare.py:smoke")
  config = config.unlock()
  config_load.apply_overrides(
    config,
    {
      "data.source": "file",
      "data.path": str(text_path),
      "data.tokenizer": "char",
      "model.vocab_size": 257,
      "model.n_embd": 32,
      "model.n_head": 2,
      "model.n_layer": 2,
      "model.block_size": 32,
      "train.batch_size": 8,
      "train.steps": 12,
      "train.eval_every": 4,
      "train.checkpoint_every": 4,
      "train.log_every": 1,
      "train.sample_tokens": 0,
      "optim.learning_rate": 3e-3,
      "optim.warmup_steps": 2,
      **overrides,
    },
  )
  return config


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("data") / "book.txt"
  path.write_text(TEXT)
  return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, text_file):
  workdir = tmp_path_factory.mktemp("run")
  result = lm.train(tiny_config(text_file), workdir)
  return workdir, result


def train_losses(workdir):
  return [r["train_loss"] for r in metrics_lib.read_metrics(workdir) if "train_loss" in r]


def test_run_writes_config_metrics_and_checkpoints(finished_run):
  workdir, result = finished_run
  assert result.step == 12
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["model"]["n_embd"] == 32
  records = metrics_lib.read_metrics(workdir)
  train = [r for r in records if "train_loss" in r]
  evals = [r for r in records if "val_loss" in r]
  assert [r["step"] for r in train] == list(range(1, 13))
  assert [r["step"] for r in evals] == [4, 8, 12]
  for key in ("train_loss", "lr", "grad_norm", "tokens_per_s"):
    assert all(np.isfinite(r[key]) for r in train), key
  assert train[-1]["train_loss"] < train[0]["train_loss"] - 0.5
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [4, 8, 12]
  assert (workdir / "best").is_dir()
  assert result.best_val_loss == min(r["val_loss"] for r in evals)
  assert 0 < result.unigram_entropy < np.log(257)
  assert result.num_params > 0


def test_rerunning_a_finished_run_keeps_its_figures(finished_run, text_file):
  workdir, result = finished_run
  before = json.loads((workdir / "summary.json").read_text())
  again = lm.train(tiny_config(text_file), workdir)
  after = json.loads((workdir / "summary.json").read_text())
  assert again.step == 12 and after["resumed_from"] == 12
  assert (again.final_train_loss, again.final_val_loss, again.best_val_loss) == (
    result.final_train_loss,
    result.final_val_loss,
    result.best_val_loss,
  )
  for key in ("final_train_loss", "final_val_loss", "best_val_loss", "status", "steps"):
    assert after[key] == before[key], key


def test_learning_rate_warms_up_then_decays(finished_run):
  workdir, _ = finished_run
  lrs = [r["lr"] for r in metrics_lib.read_metrics(workdir) if "lr" in r]
  assert lrs[0] == 0.0 and lrs[2] == pytest.approx(3e-3)
  assert lrs[-1] < lrs[2]


def test_resume_after_a_crash_between_saves_is_bitwise_identical(
  finished_run, text_file, tmp_path, monkeypatch
):
  reference_dir, _ = finished_run
  calls = {"n": 0}
  real = lm.to_global_batch

  def crash_after_six_steps(*args, **kw):
    calls["n"] += 1
    if calls["n"] == 7:
      raise KeyboardInterrupt("simulated crash")
    return real(*args, **kw)

  monkeypatch.setattr(lm, "to_global_batch", crash_after_six_steps)
  with pytest.raises(KeyboardInterrupt):
    lm.train(tiny_config(text_file), tmp_path)
  monkeypatch.setattr(lm, "to_global_batch", real)
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [4]
  result = lm.train(tiny_config(text_file), tmp_path)  # Resumes from step 4.
  assert result.step == 12
  assert train_losses(tmp_path) == train_losses(reference_dir)
  a, _, _ = api.load_model(tmp_path)
  b, _, _ = api.load_model(reference_dir)
  from flax import nnx

  for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_gradient_accumulation_matches_the_full_batch(text_file, tmp_path):
  short = {
    "train.steps": 3,
    "train.eval_every": 0,
    "train.checkpoint_every": 0,
    "train.batch_size": 16,
  }
  full = lm.train(tiny_config(text_file, **short), tmp_path / "a")
  accum = lm.train(tiny_config(text_file, **short, **{"train.grad_accum": 2}), tmp_path / "b")
  np.testing.assert_allclose(train_losses(tmp_path / "a"), train_losses(tmp_path / "b"), rtol=1e-5)
  assert full.step == accum.step == 3


def test_changed_model_shape_on_resume_is_refused(finished_run, text_file):
  workdir, _ = finished_run
  with pytest.raises(errors.ConfigError, match="model.n_embd"):
    lm.train(tiny_config(text_file, **{"model.n_embd": 64}), workdir)


def test_trainer_and_sampler_api(text_file, tmp_path):
  result = api.Trainer(
    workdir=tmp_path,
    config="configs/shakespeare.py:smoke",
    data__source="file",
    data__path=str(text_file),
    data__tokenizer="char",
    model__vocab_size=257,
    train__steps=4,
    train__batch_size=8,
    train__sample_tokens=0,
  ).run()
  assert result.step == 4
  sampler = api.Sampler(tmp_path, seed=0)
  text = sampler.generate_text("It is", 10, temperature=0.0)
  assert isinstance(text, str) and len(text) > 0
  assert sampler.generate_text("It is", 10, temperature=0.0) == text
  assert len(sampler.generate_text("", 5, num_samples=3)) == 3


def test_trainer_rejects_unknown_override_with_suggestion():
  with pytest.raises(errors.ConfigError, match="Did you mean 'train.steps'"):
    api.Trainer(workdir="/tmp/unused", config="configs/shakespeare.py:smoke", train__step=3)
