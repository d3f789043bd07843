"""Fine-tuning from a pretrained GPT-2: model.init_from in the trainer, compare_samples."""

import json
import logging
import shutil

import jax
import numpy as np
import pytest

from llmjax import api, jobs
from llmjax.cli import compare_samples
from llmjax.config import load as config_load
from llmjax.config import validate as config_validate
from llmjax.pretrained import from_hf, init_from
from llmjax.util import errors

GOLDEN = "tests/goldens/gpt2"
TEXT = "It was the best of times, it was the worst of times, it was the age of wisdom.\n" * 30


def smoke_config(text_path, **overrides):
  config = config_load.load_config("configs/book_finetune.py:smoke").unlock()
  config_load.apply_overrides(
    config,
    {
      "data.source": "file",
      "data.path": str(text_path),
      "model.scan_layers": False,
      "model.remat": "none",
      "model.dtype": "float32",
      "train.grad_accum": 1,
      "train.steps": 2,
      "train.eval_every": 2,
      "train.checkpoint_every": 2,
      "train.sample_tokens": 0,
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
def frozen_run(tmp_path_factory, text_file):
  """Two steps at a learning rate of 1e-12, started as the book library's users write it:
  the run's weights are the checkpoint's."""
  workdir = tmp_path_factory.mktemp("run")
  trainer = api.Trainer(
    out_dir=workdir,
    init_from=GOLDEN,
    dataset=str(text_file),
    max_iters=2,
    eval_interval=2,
    learning_rate=1e-12,
    n_layer=6,
    block_size=24,
    batch_size=8,
    dtype="float32",
    gradient_accumulation_steps=1,
    model__mlp_hidden=0,
    model__scan_layers=False,
    model__remat="none",
    train__checkpoint_every=2,
    train__sample_tokens=0,
  )
  # A local GPT-2 directory starts from configs/book_finetune.py; its 257-token
  # vocabulary picks the byte tokenizer.
  assert trainer.config.name == "book-finetune-gpt2-xl" and trainer.config.data.tokenizer == "char"
  return workdir, trainer.run()


@pytest.mark.slow
def test_run_starts_from_checkpoint_weights(frozen_run):
  workdir, result = frozen_run
  assert result.step == 2
  saved = json.loads((workdir / "config.json").read_text())["model"]
  # The checkpoint fixed the architecture the config got wrong.
  assert (saved["n_layer"], saved["mlp_hidden"]) == (2, 52)
  assert saved["init_from"].endswith(GOLDEN)
  model, _, step = api.load_model(workdir)
  golden, _ = from_hf(GOLDEN)
  assert step == 2
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
    jax.tree.map(np.asarray, dict(_params(model))),
    jax.tree.map(np.asarray, dict(_params(golden))),
  )


def _params(model):
  from flax import nnx  # pylint: disable=import-outside-toplevel

  return nnx.to_pure_dict(nnx.state(model))


@pytest.mark.slow
def test_compare_samples_table(frozen_run):
  workdir, _ = frozen_run
  before, after = compare_samples.load(GOLDEN), compare_samples.load(str(workdir))
  assert after.tokenizer == "char" and before.tokenizer is None
  table = compare_samples.compare(before, after, ["It was", "the | age"], max_new_tokens=12)
  lines = table.splitlines()
  assert lines[0] == f"| prompt | before: {GOLDEN} | after: {workdir} (best step 2) |"
  assert len(lines) == 4 and lines[3].startswith("| the \\| age | ")
  # Same weights, greedy decoding: identical continuations, 12 bytes each.
  for line in lines[2:]:
    cells = line[2:-2].split(" | ")
    assert cells[-1] == cells[-2]
  with pytest.raises(ValueError, match="has a vocabulary of 257"):
    compare_samples.compare(before, after, ["x"], tokenizer="gpt2")


def test_run_dir_detection(frozen_run, tmp_path):
  workdir, _ = frozen_run
  assert compare_samples.is_run_dir(str(workdir))
  assert not compare_samples.is_run_dir(GOLDEN)
  assert not compare_samples.is_run_dir(str(tmp_path))


def test_config_resolution_errors(text_file):
  with pytest.raises(ValueError, match="block_size=32 exceeds .* \\(n_positions=24\\)"):
    init_from.resolve_model_config(smoke_config(text_file, **{"model.block_size": 32}))
  with pytest.raises(ValueError, match="is a 'bert' checkpoint"):
    init_from.resolve_model_config(
      smoke_config(text_file, **{"model.init_from": "tests/goldens/bert"})
    )
  with pytest.raises(errors.AssetError, match="'./nowhere'.* does not exist"):
    init_from.resolve_model_config(smoke_config(text_file, **{"model.init_from": "./nowhere"}))
  scratch = smoke_config(text_file, **{"model.init_from": "scratch"})
  assert init_from.resolve_model_config(scratch) is scratch


def test_finetune_variants_are_consistent():
  for size, (n_layer, n_head, n_embd, *_) in {
    "gpt2": (12, 12, 768),
    "gpt2-medium": (24, 16, 1024),
    "gpt2-large": (36, 20, 1280),
    "gpt2-xl": (48, 25, 1600),
  }.items():
    c = config_load.load_config(f"configs/book_finetune.py:{size}").unlock()
    c.data.path = "book.txt"
    config_validate.validate(c)
    assert (c.model.init_from, c.model.n_layer, c.model.n_head, c.model.n_embd) == (
      size,
      n_layer,
      n_head,
      n_embd,
    )
    assert c.model.dtype == "bfloat16" and c.train.patience > 0
  assert config_load.load_config("configs/book_finetune.py").model.init_from == "gpt2-xl"


def test_unreachable_hub_checkpoint_is_one_line(text_file, monkeypatch, capsys):
  import huggingface_hub

  from llmjax.cli import common as cli
  from llmjax.util import errors

  def offline(repo_id, **kwargs):
    raise huggingface_hub.errors.LocalEntryNotFoundError(
      "Cannot find an appropriate cached snapshot folder; outgoing traffic has been disabled."
    )

  monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
  config = smoke_config(text_file, **{"model.init_from": "gpt2-xl"})
  with pytest.raises(
    errors.DownloadError,
    match=r"could not fetch 'gpt2-xl' from the "
    r"Hugging Face hub \(LocalEntryNotFoundError",
  ):
    init_from.resolve_model_config(config)
  with pytest.raises(SystemExit) as exit_info, cli.user_errors():
    init_from.resolve_model_config(config)
  message = str(exit_info.value.code)
  assert message.startswith("Error: could not fetch 'gpt2-xl'") and "\n" not in message


def test_trainer_picks_the_finetune_config_for_a_hub_checkpoint(text_file):
  trainer = api.Trainer(out_dir="runs/x", init_from="gpt2-medium", dataset=str(text_file))
  c = trainer.config  # Nothing is downloaded before run().
  assert (c.name, c.model.init_from, c.model.n_layer, c.data.tokenizer) == (
    "book-finetune-gpt2-medium",
    "gpt2-medium",
    24,
    "gpt2",
  )
  assert (c.data.source, c.data.path, c.train.patience) == ("file", str(text_file), 4)


def test_a_hub_checkpoint_records_the_commit_it_came_from(tmp_path, text_file, monkeypatch, caplog):
  import huggingface_hub  # pylint: disable=import-outside-toplevel

  commit = "0123456789abcdef0123456789abcdef01234567"
  snapshot = tmp_path / "hub" / "models--someone--tiny-gpt2" / "snapshots" / commit
  shutil.copytree(GOLDEN, snapshot)
  asked = []

  def fake_download(repo_id, allow_patterns=None, **kwargs):
    asked.append((repo_id, kwargs.get("revision")))
    return str(snapshot)

  monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
  config = smoke_config(
    text_file,
    **{"model.init_from": "someone/tiny-gpt2", "data.tokenizer": "char", "train.steps": 1},
  )
  result = jobs.run(config, tmp_path / "run")
  assert asked and all(a == ("someone/tiny-gpt2", None) for a in asked)  # Unpinned.
  assert result.summary["init_from_commit"] == commit
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["init_from_commit"] == commit
  assert init_from.checkpoint_commit(GOLDEN) is None  # A local directory has none.
  # Resumed after the hub moved on: the start's commit stays.
  newer = tmp_path / "hub" / "models--someone--tiny-gpt2" / "snapshots" / ("f" * 40)
  shutil.copytree(GOLDEN, newer)
  monkeypatch.setattr(
    huggingface_hub, "snapshot_download", lambda repo_id, allow_patterns=None, **kw: str(newer)
  )
  config.unlock().train.steps = 2
  resumed = jobs.run(config, tmp_path / "run")
  assert resumed.step == 2 and resumed.summary["init_from_commit"] == commit
  # A damaged summary.json does not stop a resume; the commit is then not carried over.
  (tmp_path / "run" / "summary.json").write_text('{"init_from_comm')
  config.train.steps = 3
  with caplog.at_level(logging.WARNING):
    again = jobs.run(config, tmp_path / "run")
  assert again.step == 3 and "init_from_commit" not in again.summary
  assert "summary.json is unreadable" in caplog.text
