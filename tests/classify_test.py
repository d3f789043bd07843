"""The classify job end to end: a planted rule learned by a tiny encoder, real MiniLM
weights through the frozen path, resume, and config errors."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from llmjax.config import load as config_load
from llmjax.config import validate as config_validate
from llmjax.data import arena
from llmjax.pretrained import from_hf
from llmjax.runs import checkpoint as ckpt_lib
from llmjax.train import build_classifier, classify
from llmjax.train import metrics as metrics_lib
from llmjax.util import assets, errors


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("tok")
  (directory / "vocab.txt").write_text(
    "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *arena.SYNTHETIC_WORDS]) + "\n"
  )
  return directory


def config(variant="smoke", **overrides):
  c = config_load.load_config(f"configs/arena_classifier.py:{variant}").unlock()
  config_load.apply_overrides(c, overrides)
  return c


def test_tiny_encoder_learns_longer_answer_wins(vocab_dir, tmp_path):
  c = config(
    **{
      "classifier.tokenizer": str(vocab_dir),
      "classifier.hidden_size": 16,
      "classifier.intermediate_size": 32,
      "classifier.head_hidden": 32,
      "arena.synthetic_rows": 600,
      "train.steps": 60,
      "train.eval_every": 30,
      "train.checkpoint_every": 60,
      "train.log_every": 15,
    }
  )
  result = classify.train(c, tmp_path)
  report = result.report
  assert report["accuracy"] > 0.9, report
  assert report["log_loss"] < 0.5 < report["baselines"]["majority"]["log_loss"]
  assert report["examples"] == 120 and np.sum(report["confusion"]) == 120
  assert json.loads((tmp_path / "eval_report.json").read_text()) == report
  records = metrics_lib.read_metrics(tmp_path)
  assert [r["step"] for r in records if "val_accuracy" in r] == [30, 60]
  assert [r["step"] for r in records if "train_loss" in r] == [15, 30, 45, 60]
  assert result.num_trainable == result.num_params


@pytest.mark.slow
def test_minilm_frozen_trains_only_the_head(tmp_path):
  c = config(
    "minilm,frozen",
    **{
      "arena.source": "synthetic",
      "arena.path": "",
      "arena.synthetic_rows": 40,
      "arena.val_fraction": 0.2,
      "arena.prompt_max_tokens": 8,
      "arena.response_max_tokens": 24,
      "train.steps": 3,
      "train.batch_size": 8,
      "train.eval_every": 3,
      "train.log_every": 1,
      "train.checkpoint_every": 3,
    },
  )
  result = classify.train(c, tmp_path)
  assert result.step == 3 and np.isfinite(result.final_train_loss)
  assert result.num_params > 22e6 and result.num_trainable == 4 * 384 * 256 + 256 + 256 * 3 + 3
  model, _ = build_classifier.build_model(c.classifier, c.train.seed)
  graphdef, state = nnx.split(model)
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(state))
  trained, step = ckpt_lib.restore_params(tmp_path, target, "latest")
  assert step == 3
  reference, _ = from_hf(assets.minilm_dir())
  want = nnx.to_pure_dict(nnx.state(reference))
  jax.tree.map(
    lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
    trained["encoder"],
    want,
  )
  initial_head = nnx.to_pure_dict(state)["head_in"]["kernel"]
  assert not np.array_equal(np.asarray(trained["head_in"]["kernel"]), np.asarray(initial_head))
  del graphdef


def test_config_errors(vocab_dir, tmp_path):
  with pytest.raises(errors.ConfigError, match="needs classifier.tokenizer"):
    classify.train(config(**{"classifier.tokenizer": ""}), tmp_path / "a")
  with pytest.raises(errors.ConfigError, match="response_max_tokens=53 or less"):
    classify.train(
      config(**{"classifier.tokenizer": str(vocab_dir), "arena.response_max_tokens": 64}),
      tmp_path / "b",
    )
  with pytest.raises(ValueError, match="Unknown variant part\\(s\\) \\['gpt'\\]"):
    config("gpt,frozen")
  c = config("deberta-v3,bottom_frozen")
  assert (c.classifier.init_from, c.classifier.freeze, c.arena.response_max_tokens) == (
    "microsoft/deberta-v3-base",
    "bottom_frozen",
    512,
  )
  config_validate.validate(c)
