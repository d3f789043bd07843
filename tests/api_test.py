"""The Python API as the book-learning library's users call it: flat names, Trainer, Sampler."""

import os
import pathlib
import subprocess
import sys
import tempfile

import ml_collections
import numpy as np
import pytest

from llmjax import api
from llmjax.api import names as api_names
from llmjax.config import load as config_load
from llmjax.util import errors

REPO = pathlib.Path(__file__).resolve().parent.parent
GOLDEN_GPT2 = REPO / "tests" / "goldens" / "gpt2"
TEXT = (
  "One morning, as Gregor Samsa was waking up from anxious dreams, he discovered that "
  "in bed he had been changed into a monstrous verminous bug.\nWhat has happened to me, "
  "he thought. It was no dream.\n"
) * 6
PROMPT = "My name is Martin and I am"


def _whole_book_supported() -> bool:
  """Whether the data layer trains on a whole text (data.val_fraction=0)."""
  from llmjax.data import shards  # pylint: disable=import-outside-toplevel

  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "book.txt"
    path.write_text(TEXT)
    data = {"source": "file", "path": str(path), "tokenizer": "char", "val_fraction": 0.0}
    try:
      splits = shards.prepare_tokens(ml_collections.ConfigDict(data), tmp, progress=False)
    except errors.LlmjaxError:
      return False
    return len(splits.train) == len(TEXT.encode())


@pytest.fixture
def book(tmp_path, monkeypatch):
  """A scratch directory as the current one, holding kafka.txt."""
  monkeypatch.chdir(tmp_path)
  (tmp_path / "kafka.txt").write_text(TEXT)
  return tmp_path


@pytest.mark.slow
@pytest.mark.skipif(
  not _whole_book_supported(),
  reason="needs whole-book learning in the "
  "data layer: data.val_fraction=0 (configs/book.py) is still rejected",
)
def test_readme_block_runs_as_written(book, capsys):
  # The book library's README, with a local file for the URL and max_iters so that it
  # takes seconds (the README's run ends by early stopping).
  from llmjax import Trainer  # pylint: disable=import-outside-toplevel

  trainer = Trainer(
    out_dir="kafka",
    dataset="kafka.txt",
    eval_interval=10,
    batch_size=4,
    block_size=8,
    n_layer=1,
    n_head=1,
    n_embd=4,
    dropout=0.2,
    learning_rate=0.01,
    beta2=0.99,
    max_iters=20,
  )
  result = trainer.run()
  assert result.step == 20 and result.best_val_loss is not None
  assert trainer.config.train.patience == api_names.BOOK_PATIENCE
  assert trainer.config.data.val_fraction == 0.0
  assert (book / "kafka" / "config.json").is_file()
  Trainer.help_config()

  from llmjax import Sampler  # pylint: disable=import-outside-toplevel

  sampler = Sampler(out_dir="kafka", seed=None)
  fresh = [sampler.generate_text(prompt=PROMPT, max_tokens=30) for _ in range(2)]
  sampler = Sampler(out_dir="kafka", seed=0)
  fixed = [sampler.generate_text(prompt=PROMPT, max_tokens=30) for _ in range(2)]
  assert fresh[0] != fresh[1] and fixed[0] == fixed[1]
  assert all(text.startswith(PROMPT) and len(text) > len(PROMPT) for text in fresh + fixed)
  only_new = sampler.generate_text(prompt=PROMPT, max_tokens=30, include_prompt=False)
  assert fixed[0] == PROMPT + only_new
  Sampler.help_model_config()
  Sampler.help_text_config()  # noqa: E702

  sampler = Sampler(init_from="online", out_dir=str(GOLDEN_GPT2))
  assert sampler.generate_text(prompt="Today I decided to").startswith("Today I decided to")
  printed = capsys.readouterr().out
  for name in [*api_names.BY_NAME, *api.MODEL_ARGS, *api.TEXT_ARGS, "optim.beta2"]:
    assert name in printed


def test_flat_names_map_onto_config_keys(book):
  trainer = api.Trainer(
    out_dir="runs/kafka",
    dataset="kafka.txt",
    eval_interval=10,
    batch_size=3,
    gradient_accumulation_steps=2,
    block_size=8,
    n_layer=1,
    n_head=1,
    n_embd=4,
    dropout=0.2,
    learning_rate=0.01,
    min_lr=0.001,
    beta2=0.99,
    max_iters=50,
    lr_decay_iters=50,
    train_ratio=0.9,
    eval_iters=3,
    log_interval=5,
    seed=1337,
    encoding="char",
    warmup_iters=7,
    bias=False,
    weight_decay=0.0,
    beta1=0.8,
    grad_clip=0.5,
    patience=2,
    train__keep_checkpoints=1,
    model__vocab_size=257,
  )
  c = trainer.config
  assert trainer.workdir == pathlib.Path("runs/kafka")
  assert (c.data.source, c.data.path, c.data.tokenizer) == ("file", "kafka.txt", "char")
  assert (c.train.eval_every, c.train.eval_batches, c.train.log_every, c.train.seed) == (
    10,
    3,
    5,
    1337,
  )
  # batch_size is per micro-batch, as in the book library.
  assert (c.train.batch_size, c.train.grad_accum) == (6, 2)
  assert (c.model.block_size, c.model.n_layer, c.model.n_head, c.model.n_embd) == (8, 1, 1, 4)
  assert (c.model.dropout, c.model.bias, c.train.steps) == (0.2, False, 50)
  assert (c.optim.learning_rate, c.optim.beta1, c.optim.beta2) == (0.01, 0.8, 0.99)
  assert c.optim.min_lr_ratio == pytest.approx(0.1)
  assert (c.optim.warmup_steps, c.optim.weight_decay, c.optim.grad_clip) == (7, 0.0, 0.5)
  assert c.data.val_fraction == pytest.approx(0.1)
  assert (c.train.patience, c.train.keep_checkpoints, c.model.vocab_size) == (2, 1, 257)
  assert c.name == "book"  # A dataset= run starts from configs/book.py.

  constant = api.Trainer(
    workdir="x",
    config="configs/shakespeare.py:smoke",
    decay_lr=False,
    steps=3,
    dataset="shakespeare",
  )
  c = constant.config
  assert (c.optim.min_lr_ratio, c.optim.warmup_steps, c.train.steps) == (1.0, 0, 3)
  assert (c.data.source, c.data.path) == ("shakespeare", "")
  # Book runs stop when the loss stops improving, whatever config they start from.
  assert c.train.patience == api_names.BOOK_PATIENCE
  url = api.Trainer(config="configs/shakespeare.py:smoke", dataset="https://example.org/a.txt")
  assert (url.config.data.source, url.config.data.path) == ("url", "https://example.org/a.txt")
  assert url.workdir == pathlib.Path("runs/shakespeare-smoke")
  assert api.Trainer(config="configs/shakespeare.py:smoke").config.train.patience == 0


@pytest.mark.parametrize(
  "kwargs, error, message",
  [
    (dict(n_layers=2), errors.ConfigError, "Unknown keyword n_layers=. Did you mean 'n_layer'"),
    (dict(torch_compile=False), errors.ConfigError, "always compiles with XLA"),
    (dict(wandb_log=True), errors.ConfigError, "track__mlflow=True"),
    (dict(out_dir="a", workdir="b"), errors.ConfigError, "workdir= or out_dir=, not both"),
    (
      dict(dataset="nowhere.txt"),
      errors.DataFileNotFoundError,
      "dataset='nowhere.txt': no such file",
    ),
    (dict(init_from="resume", out_dir="new"), errors.RunNotFoundError, "holds no run"),
    (dict(max_iters=10, lr_decay_iters=20), errors.ConfigError, "drop lr_decay_iters"),
    (dict(decay_lr=False, min_lr=1e-4), errors.ConfigError, "min_lr= has no effect"),
    (dict(train_ratio=0.0), errors.ConfigError, "must be in \\(0, 1\\]"),
    (dict(train__stepz=3), errors.ConfigError, "Did you mean 'train.steps'"),
    (dict(n_embd=10, n_head=3), errors.ConfigError, "divisible by model.n_head=3"),
  ],
)
def test_bad_keywords_name_the_fix(book, kwargs, error, message):
  with pytest.raises(error, match=message):
    api.Trainer(config="configs/shakespeare.py:smoke", **kwargs)


def test_ambiguous_llmjax_name_lists_the_choices():
  config = config_load.load_config(api.config_path("configs/shakespeare.py"))
  with pytest.raises(errors.ConfigError, match="could be notes__batch_size or train__batch_size"):
    api_names.dotted_key("batch_size", config)
  assert api_names.dotted_key("eval_every", config) == "train.eval_every"
  assert api_names.dotted_key("optim__eps", config) == "optim.eps"


def test_help_config_lists_every_name(capsys):
  text = api.Trainer.help_config()
  assert capsys.readouterr().out.strip() == text.strip()
  config = config_load.load_config(api.config_path("configs/book.py"))
  for name in [*api_names.BY_NAME, *api_names.NOT_SUPPORTED, *config_load.flatten(config)]:
    assert name in text
  assert "beta2                        -> optim.beta2 = 0.95: AdamW beta2" in text


def test_sampler_help_covers_every_argument():
  model_help, text_help = api.Sampler.help_model_config(), api.Sampler.help_text_config()
  assert "seed             = 0" in model_help and "init_from        = 'resume'" in model_help
  assert "max_tokens      = 100" in text_help and "prompt          = '\\n'" in text_help
  assert len(model_help.splitlines()) == len(api.MODEL_ARGS) + 1
  assert len(text_help.splitlines()) == len(api.TEXT_ARGS) + 1


def test_online_sampler_loads_the_checkpoint():
  golden = np.load(GOLDEN_GPT2 / "golden.npz")
  sampler = api.Sampler(init_from="online", out_dir=str(GOLDEN_GPT2))
  assert sampler.tokenizer.name == "char"  # 257-token checkpoint without tokenizer files.
  prompt = golden["input_ids"][0, :5].tolist()
  greedy = sampler.generate_tokens(prompt, 1, temperature=0.0)[0][0]
  assert greedy == int(np.argmax(golden["logits"][0, 4]))
  text = sampler.generate_text("Hello", 5, seed=3)
  assert text.startswith("Hello") and text == sampler.generate_text("Hello", 5, seed=3)
  with pytest.raises(errors.ConfigError, match="applies to trained runs"):
    api.Sampler(init_from="online", out_dir=str(GOLDEN_GPT2), which="best")


def test_sampler_argument_errors(tmp_path):
  with pytest.raises(errors.ConfigError, match="use 'resume' .* or 'online'"):
    api.Sampler(out_dir="gpt2", init_from="hub")
  with pytest.raises(errors.SamplingError, match="seed='1'"):
    api.Sampler(out_dir=tmp_path, seed="1")
  with pytest.raises(errors.RunNotFoundError, match="not a llmjax run directory"):
    api.Sampler(out_dir=tmp_path)
  with pytest.raises(errors.AssetError, match="does not exist"):
    api.Sampler(init_from="online", out_dir=str(tmp_path / "missing"))


def test_unreachable_hub_is_one_line_on_the_command_line(tmp_path):
  env = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "PYTHONPATH": str(REPO),
    "HF_HUB_OFFLINE": "1",
    "HF_HOME": str(tmp_path),
  }
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "llmjax.sample",
      "--init_from=online",
      "--model=gpt2",
      "--prompt=Today I decided to",
    ],
    capture_output=True,
    text=True,
    env=env,
    cwd=REPO,
    timeout=120,
    check=False,
  )
  assert out.returncode == 1 and out.stdout == ""
  assert out.stderr.startswith("Error: could not fetch 'gpt2' from the Hugging Face hub (")
  assert "Connect to the network" in out.stderr and out.stderr.count("\n") == 1


def test_a_pinned_gpt2_revision_gets_its_size_defaults():
  from llmjax.api import trainer  # pylint: disable=g-import-not-at-top

  assert (
    trainer._default_config({"init_from": "gpt2-medium"}) == "configs/book_finetune.py:gpt2-medium"
  )
  assert trainer._default_config({"init_from": "gpt2-medium@main"}) == (
    "configs/book_finetune.py:gpt2-medium"
  )
  assert trainer._default_config({"init_from": "someone/model"}) == "configs/book_finetune.py"
