"""The run's shape (length, micro-batch, units per step, evaluation batch) is derived once
from the validated config and is what each job uses; a run validates its config once;
results are typed; the classifier counts epochs without rewriting the config."""

import copy
import dataclasses
import json

import pytest

from llmjax import api
from llmjax.config import load as config_load
from llmjax.config import schema as config_schema
from llmjax.config import validate as config_validate
from llmjax.data import arena, pipeline
from llmjax.train import classify, lm, progressive_task, shape
from llmjax.train import metrics as metrics_lib
from llmjax.train import task as task_lib
from llmjax.util import errors

TEXT = "The rain fell on the quiet hills and every river ran down to the sea.\n" * 40


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("text") / "text.txt"
  path.write_text(TEXT)
  return path


def lm_config(text_path, **overrides):
  config = config_load.load_config("configs/shakespeare.py:smoke").unlock()
  config_load.apply_overrides(
    config,
    {
      "data.source": "file",
      "data.path": str(text_path),
      "data.tokenizer": "char",
      "model.vocab_size": 257,
      "model.n_embd": 16,
      "model.n_head": 2,
      "model.n_layer": 1,
      "model.block_size": 16,
      "mesh.num_devices": 1,
      "train.batch_size": 8,
      "train.grad_accum": 2,
      "train.steps": 4,
      "train.eval_every": 2,
      "train.eval_batches": 2,
      "train.checkpoint_every": 4,
      "train.log_every": 1,
      "train.sample_tokens": 0,
      **overrides,
    },
  )
  return config


def test_lm_shape_from_the_config_and_the_mesh(text_file):
  c = lm_config(text_file)
  s = shape.lm_shape(c)
  assert (s.unit, s.steps, s.eval_every, s.batch, s.grad_accum) == ("tokens", 4, 2, 8, 2)
  assert (s.micro_batch, s.batch_axes, s.eval_batch, s.per_step) == (4, 1, 4, 8 * 16)
  assert shape.lm_shape(c, batch_axes=2).eval_batch == 4
  assert shape.lm_shape(c, batch_axes=4).eval_batch == 4
  with pytest.raises(errors.ConfigError) as e:
    shape.lm_shape(c, batch_axes=3)
  assert str(e.value) == (
    "train.batch_size / train.grad_accum = 4 sequences per micro-batch must be divisible "
    "by the 3 devices on the data x fsdp mesh axes."
  )
  with pytest.raises(dataclasses.FrozenInstanceError):
    s.per_step = 1


def test_pair_shape_counts_epochs_or_steps():
  c = config_schema.schema(("classifier", "arena"))
  c.train.batch_size, c.train.steps, c.train.eval_every = 16, 7, 3
  plain = shape.pair_shape(c, n_train=50)
  assert (plain.unit, plain.steps, plain.eval_every, plain.steps_per_epoch) == ("pairs", 7, 3, 3)
  assert (plain.per_step, plain.micro_batch, plain.eval_batch) == (16, 16, 16)
  c.arena.epochs = 2
  epochs = shape.pair_shape(c, n_train=50)
  assert (epochs.steps, epochs.eval_every, epochs.steps_per_epoch) == (6, 3, 3)
  assert (c.train.steps, c.train.eval_every) == (7, 3)  # Read, never rewritten.
  with pytest.raises(errors.ConfigError, match="20 pairs per micro-batch must be divisible"):
    c.train.batch_size = 20
    shape.pair_shape(c, n_train=50, batch_axes=3)


def test_a_trainer_run_validates_once_and_uses_its_shape(text_file, tmp_path, monkeypatch):
  c = lm_config(text_file)
  s = shape.lm_shape(c)
  calls = []
  validate = config_validate.validate
  monkeypatch.setattr(config_validate, "validate", lambda c: (calls.append(1), validate(c))[1])
  seen = {"train": [], "eval": []}
  train_iterator, eval_batches = pipeline.train_iterator, pipeline.eval_batches

  def record_train(tokens, block_size, batch_size, *args, **kw):
    seen["train"].append(batch_size)
    return train_iterator(tokens, block_size, batch_size, *args, **kw)

  def record_eval(tokens, block_size, batch_size, n_batches, *args, **kw):
    seen["eval"].append(batch_size)
    return eval_batches(tokens, block_size, batch_size, n_batches, *args, **kw)

  monkeypatch.setattr(pipeline, "train_iterator", record_train)
  monkeypatch.setattr(pipeline, "eval_batches", record_eval)
  result = api.Trainer(workdir=tmp_path, config=c).run()
  assert len(calls) == 1  # By the Trainer; the runner does not validate it again.
  assert seen == {"train": [s.batch], "eval": [s.eval_batch]}
  records = metrics_lib.read_metrics(tmp_path)
  assert [r["tokens"] for r in records if "train_loss" in r] == [
    k * s.per_step for k in (1, 2, 3, 4)
  ]
  assert result.step == s.steps and result.summary["tokens"] == s.steps * s.per_step
  # The result is typed: declared fields, no forwarding to the summary.
  assert isinstance(result, lm.LMResult) and result.samples == []
  assert result.unigram_entropy == result.summary["unigram_entropy"]
  with pytest.raises(AttributeError):
    result.n_train_pairs  # noqa: B018
  with pytest.raises(dataclasses.FrozenInstanceError):
    result.step = 0


def test_result_types_declare_their_job_fields():
  assert not hasattr(task_lib.RunResult, "__getattr__")
  assert task_lib.RunResult.job_fields() == ()
  lm_fields = ("unigram_entropy", "bytes_per_token", "n_train_tokens", "n_val_tokens", "samples")
  assert lm.LMResult.job_fields() == lm_fields
  assert progressive_task.ProgressiveResult.job_fields() == (*lm_fields, "stage_steps")
  assert classify.ClassifyResult.job_fields() == (
    "num_trainable",
    "steps_per_epoch",
    "report",
    "report_split",
  )
  # The stage switch is the progressive job's hook, not part of every task.
  assert not hasattr(task_lib.Task, "switch_due") and task_lib.Task.hooks == ()


def test_a_changed_config_is_validated_again():
  c = config_schema.base_config()
  assert config_validate.validated(c) is c
  c.train.grad_accum = 3
  with pytest.raises(errors.ConfigError, match="divisible by train.grad_accum=3"):
    config_validate.validated(c)


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("tok")
  (directory / "vocab.txt").write_text(
    "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *arena.SYNTHETIC_WORDS]) + "\n"
  )
  return directory


def test_classify_counts_epochs_without_rewriting_the_config(vocab_dir, tmp_path):
  c = config_load.load_config("configs/arena_classifier.py:smoke").unlock()
  config_load.apply_overrides(
    c,
    {
      "classifier.tokenizer": str(vocab_dir),
      "classifier.hidden_size": 8,
      "classifier.intermediate_size": 16,
      "classifier.head_hidden": 8,
      "arena.synthetic_rows": 100,
      "arena.epochs": 2,
      "train.batch_size": 16,
      "train.steps": 999,
      "train.eval_every": 999,
      "train.checkpoint_every": 0,
      "train.log_every": 1,
    },
  )
  before = copy.deepcopy(c.to_dict())
  result = classify.train(c, tmp_path)
  assert c.to_dict() == before
  s = shape.pair_shape(c, result.summary["n_train_pairs"])
  assert s.steps_per_epoch == result.summary["n_train_pairs"] // 16 > 1
  assert (result.step, result.steps_per_epoch) == (s.steps, s.steps_per_epoch)
  assert s.steps == 2 * s.steps_per_epoch
  records = metrics_lib.read_metrics(tmp_path)
  assert [r["step"] for r in records if "val_loss" in r] == [s.steps_per_epoch, s.steps]
  assert all(r["pairs"] == r["step"] * s.per_step for r in records if "pairs" in r)
  assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 999
