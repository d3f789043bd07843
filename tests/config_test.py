"""Configs: every file and variant loads and validates; help documents every key."""

import pathlib
import subprocess
import sys

import pytest

from llmjax import jobs, models
from llmjax.config import docs as config_docs
from llmjax.config import load as config_load
from llmjax.config import schema as config_base
from llmjax.config import validate as config_validate
from llmjax.util import errors

CONFIG_FILES = sorted(p for p in pathlib.Path("configs").glob("*.py"))


def variants(path):
  text = path.read_text()
  found = [None] + [v for v in ("cpu", "smoke", "large") if f'"{v}"' in text]
  return found


@pytest.mark.parametrize(
  "spec", [f"{p}:{v}" if v else str(p) for p in CONFIG_FILES for v in variants(p)]
)
def test_every_config_variant_loads_and_validates(spec):
  config = config_load.load_config(spec).unlock()
  if config.data.source == "file" and not config.data.path:
    config.data.path = "book.txt"  # Such configs take the text on the command line.
  config_validate.validate(config)


def test_required_keys_exist():
  flat = config_load.flatten(config_base.base_config())
  for key in [
    "model.n_layer",
    "model.n_head",
    "model.n_embd",
    "model.block_size",
    "model.dropout",
    "model.vocab_size",
    "train.steps",
    "train.batch_size",
    "train.grad_accum",
    "train.eval_every",
    "train.eval_batches",
    "train.checkpoint_every",
    "train.patience",
    "train.seed",
    "optim.learning_rate",
    "optim.beta1",
    "optim.beta2",
    "optim.weight_decay",
    "optim.warmup_steps",
    "optim.grad_clip",
    "data.source",
    "data.path",
    "data.val_fraction",
  ]:
    assert key in flat, key


@pytest.mark.parametrize("arch", sorted(models.REGISTRY))
def test_every_base_key_has_a_comment(arch):
  config = config_base.base_config(arch)
  docs = config_docs.key_comments(config)
  missing = [k for k in config_load.flatten(config) if not docs.get(k)]
  assert not missing


def test_help_lists_every_key_with_value_and_comment():
  config = config_load.load_config("configs/shakespeare.py:cpu")
  text = config_docs.help_text(config, "configs/shakespeare.py")
  assert "model.n_embd" in text and "= 128" in text and "Residual stream width." in text
  for key in config_load.flatten(config):
    assert key in text


def test_typo_in_a_config_file_is_caught_with_a_suggestion():
  config = config_base.base_config()
  config.train.stepz = 10
  with pytest.raises(errors.ConfigError, match="'train.stepz'.*'train.steps'"):
    config_validate.validate(config)


def test_wrong_type_and_impossible_values_name_the_key():
  config = config_base.base_config()
  config.model.n_head = 5
  with pytest.raises(errors.ConfigError, match="model.n_embd"):
    config_validate.validate(config)
  with pytest.raises(errors.ConfigError, match="train.steps"):
    config_load.apply_overrides(config, {"train.steps": "many"})


def test_a_restricted_softmax_is_refused_where_it_would_not_be_used():
  config = config_base.base_config()
  config.train.softmax_ids = "book"
  with pytest.raises(errors.ConfigError, match="train.softmax_ids='book': use all"):
    config_validate.validate(config)
  for spec in ("configs/progressive.py:smoke", "configs/arena_classifier.py:smoke"):
    with pytest.raises(errors.ConfigError, match="train.softmax_ids is set but config.job="):
      jobs.check_overrides(config_load.load_config(spec), ["train.softmax_ids"])
  jobs.check_overrides(config_load.load_config("configs/book.py:smoke"), ["train.softmax_ids"])


def test_unknown_variant_is_an_error():
  with pytest.raises(ValueError, match="Unknown variant 'gpu'"):
    config_load.load_config("configs/shakespeare.py:gpu")


def test_missing_config_file_lists_available():
  with pytest.raises(errors.ConfigError, match="configs/shakespeare.py"):
    config_load.load_config("configs/nope.py")


def run_main(*args):
  return subprocess.run(
    [sys.executable, "-m", "llmjax.main", *args], capture_output=True, text=True, timeout=120
  )


def test_cli_config_help_and_typo_errors():
  out = run_main("--config=configs/shakespeare.py", "--config_help")
  assert out.returncode == 0 and "train.patience" in out.stdout
  out = run_main(
    "--config=configs/shakespeare.py:smoke", "--workdir=/tmp/unused", "--config.train.step=3"
  )
  assert out.returncode != 0
  assert "Did you mean" in out.stderr and "steps" in out.stderr
  assert "Traceback" not in out.stderr
