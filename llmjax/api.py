"""Python API: `Trainer` runs what `python -m llmjax.main` runs; `Sampler` generates text
from a trained run or a pretrained GPT-2.

  from llmjax import Trainer, Sampler
  Trainer(out_dir="runs/kafka", dataset="book.txt", n_layer=6, n_head=6).run()
  print(Sampler(out_dir="runs/kafka", seed=None).generate_text("My name is", max_tokens=50))
  print(Sampler(init_from="online", out_dir="gpt2").generate_text("Today I decided to"))

Keywords are the book-learning library's flat names (`llmjax.api_names`), llmjax config
keys as `section__key`, or an llmjax key's unique last part.
"""

from __future__ import annotations

import inspect
import json
import pathlib
import secrets
from typing import Any

import jax
import ml_collections
from flax import nnx

from llmjax import api_names
from llmjax import config_util
from llmjax import errors
from llmjax import data as data_lib
from llmjax import generate
from llmjax import models
from llmjax.train import checkpoint as ckpt_lib

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
BOOK_CONFIG = "configs/book.py"
FINETUNE_CONFIG = "configs/book_finetune.py"
DEFAULT_CONFIG = "configs/shakespeare.py"


def config_path(spec: str) -> str:
  """`spec` as given if its file exists here, else relative to the llmjax checkout."""
  path, sep, variant = spec.partition(":")
  if not pathlib.Path(path).is_file() and (REPO_ROOT / path).is_file():
    return f"{REPO_ROOT / path}{sep}{variant}"
  return spec


def _default_config(kwargs: dict[str, Any]) -> str:
  """A book run for `dataset=`, a fine-tune for `init_from=<GPT-2>`, else Shakespeare."""
  from llmjax.pretrained import init_from  # pylint: disable=import-outside-toplevel
  start = str(kwargs.get("init_from", "scratch"))
  if start not in ("scratch", "resume"):
    return f"{FINETUNE_CONFIG}:{start}" if start in init_from.GPT2_SIZES else FINETUNE_CONFIG
  if "dataset" in kwargs or "training_data_path" in kwargs:
    return BOOK_CONFIG
  return DEFAULT_CONFIG


class Trainer:
  """Trains (or resumes) a run, exactly as `python -m llmjax.main` would.

  `config` is a path spec (`configs/book.py:cpu`) or a ConfigDict; without it a
  `dataset=` run starts from `configs/book.py`, an `init_from='gpt2...'` run from
  `configs/book_finetune.py`, anything else from `configs/shakespeare.py`. Keywords
  override it (see the module docstring); `overrides` takes dotted keys. A run given a
  `dataset=` stops when the evaluation loss stops improving (`patience`).
  """

  def __init__(self, workdir: str | pathlib.Path | None = None,
               config: str | ml_collections.ConfigDict | None = None,
               overrides: dict[str, Any] | None = None, **kwargs):
    if not isinstance(config, ml_collections.ConfigDict):
      config = config_util.load_config(config_path(config or _default_config(kwargs)))
    self.config = ml_collections.ConfigDict(config.to_dict())
    names = api_names.resolve(kwargs, self.config)
    if workdir is not None and names.workdir is not None:
      raise errors.ConfigError(f"Pass workdir= or out_dir=, not both (got {workdir!r} and "
                               f"{str(names.workdir)!r}).")
    config_util.apply_overrides(self.config, {**(overrides or {}), **names.overrides})
    explicit = names.explicit | {k.replace("__", ".") for k in (overrides or {})}
    self._book_defaults(kwargs, explicit)
    if any(name in api_names.BY_NAME for name in kwargs):
      self._fit_mesh_to_batch()
    config_util.validate(self.config)
    from llmjax import jobs  # pylint: disable=import-outside-toplevel
    jobs.check_overrides(self.config, [*(overrides or {}), *names.overrides])
    self.workdir = pathlib.Path(workdir or names.workdir or f"runs/{self.config.name}")
    if names.resume and not (self.workdir / "config.json").is_file():
      raise errors.RunNotFoundError(
          f"init_from='resume' but {self.workdir} holds no run to resume; train it first, or "
          "use init_from='scratch'.")

  def _book_defaults(self, kwargs: dict[str, Any], explicit: set[str]) -> None:
    c = self.config
    if ("dataset" in kwargs or "training_data_path" in kwargs) and not c.train.patience \
        and "train.patience" not in explicit:
      c.train.patience = api_names.BOOK_PATIENCE  # Book runs stop when learning stalls.
    if "init_from" in kwargs and "data.tokenizer" not in explicit:
      from llmjax.pretrained import init_from  # pylint: disable=import-outside-toplevel
      if init_from.is_pretrained(c.model):
        c.data.tokenizer = init_from.tokenizer_for(c.model.init_from) or c.data.tokenizer

  def _fit_mesh_to_batch(self) -> None:
    """The book library trains on one device; here a batch that does not split over every
    local device trains on the largest number of them it does split over."""
    m, t = self.config.mesh, self.config.train
    if m.num_devices or m.tensor != 1 or t.grad_accum <= 0 or t.batch_size % t.grad_accum:
      return
    micro, n = t.batch_size // t.grad_accum, jax.device_count()
    if micro % n:
      m.num_devices = max(d for d in range(1, n + 1) if micro % d == 0)
      print(f"llmjax: {micro} sequences per micro-batch do not split over {n} devices; "
            f"training on {m.num_devices} (set mesh__num_devices to choose).", flush=True)

  @staticmethod
  def help_config(config: str | None = None) -> str:
    """Prints (and returns) every keyword: the flat names, then every config key."""
    spec = config_path(config or BOOK_CONFIG)
    loaded = config_util.load_config(spec)
    text = (f"{api_names.help_text(loaded)}\n\nEvery config key (keyword section__key=..., "
            f"values from {spec}):\n{config_util.help_text(loaded, spec)}")
    print(text)
    return text

  def run(self):
    from llmjax import jobs  # pylint: disable=import-outside-toplevel
    return jobs.run(self.config, str(self.workdir))


def load_run_config(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
  path = pathlib.Path(workdir) / "config.json"
  if not path.exists():
    raise errors.RunNotFoundError(
        f"{path} does not exist: {workdir} is not a llmjax run directory. Train first with "
        "python -m llmjax.main --config=... --workdir=...")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def load_model(workdir: str | pathlib.Path, which: str = "latest") -> tuple[nnx.Module, ml_collections.ConfigDict, int]:
  """Restores only the parameters of a run (no optimizer state) onto the local devices."""
  config = load_run_config(workdir)
  abstract_model = nnx.eval_shape(lambda: models.build(config.model, 0))
  graphdef, abstract_state = nnx.split(abstract_model)
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        nnx.to_pure_dict(abstract_state))
  params, step = ckpt_lib.restore_params(workdir, target, which)
  return nnx.merge(graphdef, params), config, step


_CHECKPOINT_NAMES = {"latest": "latest", "last": "latest", "best": "best"}

# Meanings of the Sampler's and generate_text's arguments (defaults come from the
# signatures, so help and behaviour cannot drift apart).
MODEL_ARGS = {
    "workdir": "Run directory written by training (same as out_dir).",
    "seed": "Sampling seed: an int makes every call repeatable; None draws a fresh seed "
            "per call.",
    "which": "Which checkpoint of a run: 'latest' (None) or 'best' (lowest validation loss).",
    "out_dir": "init_from='resume': the run directory. init_from='online': gpt2, "
               "gpt2-medium, gpt2-large, gpt2-xl (downloaded once from the Hugging Face hub "
               "and cached) or a local Hugging Face GPT-2 directory.",
    "init_from": "'resume' (a trained run in out_dir) or 'online' (a pretrained GPT-2).",
    "checkpoint_name": "Same as which ('last' is accepted for 'latest').",
    "dtype": "Inference dtype: float32, or bfloat16 (parameters cast, matmuls and KV cache "
             "in bfloat16; see docs/performance.md for what it costs).",
}
TEXT_ARGS = {
    "prompt": "Prompt to start generation; '<|endoftext|>' is the end-of-text token; "
              "'FILE:prompt.txt' reads the prompt from a file; '' starts from end-of-text.",
    "max_tokens": "Number of tokens generated in each sample.",
    "temperature": "1.0 = no change, < 1.0 = less random, > 1.0 = more random; 0 = greedy.",
    "top_k": "Retain only the top_k most likely tokens (0 = all).",
    "top_p": "Retain the smallest set of tokens whose probability reaches top_p (1 = all).",
    "num_samples": "Number of samples to draw (a list is returned when > 1).",
    "seed": "Seed for this call only (default: the Sampler's seed).",
    "include_prompt": "Return the prompt followed by the generated text (False: the "
                      "generated text only).",
}


def _arguments_help(title: str, fn, meanings: dict[str, str]) -> str:
  params = [p for p in inspect.signature(fn).parameters.values() if p.name != "self"]
  width = max(len(p.name) for p in params)
  lines = [title]
  for p in params:
    default = "(required)" if p.default is inspect.Parameter.empty else f"= {p.default!r}"
    lines.append(f"  {p.name:<{width}}  {default:<14}  {meanings[p.name]}")
  return "\n".join(lines)


class Sampler:
  """Generates text from a trained run (`init_from='resume'`) or a pretrained GPT-2
  (`init_from='online'`)."""

  def __init__(self, workdir: str | pathlib.Path | None = None, seed: int | None = 0,
               which: str | None = None, *, out_dir: str | pathlib.Path | None = None,
               init_from: str = "resume", checkpoint_name: str | None = None,
               dtype: str = "float32"):
    if workdir is not None and out_dir is not None:
      raise errors.ConfigError("Pass workdir= or out_dir=, not both.")
    if which is not None and checkpoint_name is not None:
      raise errors.ConfigError("Pass which= or checkpoint_name=, not both.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
      raise errors.SamplingError(f"seed={seed!r} must be an int, or None for a fresh seed "
                                 "per call.")
    target = workdir if workdir is not None else out_dir
    if target is None:
      raise errors.ConfigError("Sampler needs out_dir= (a run directory, or with "
                               "init_from='online' a GPT-2 name such as 'gpt2').")
    which = which or checkpoint_name
    self.seed = seed
    if init_from == "resume":
      if which is not None and which not in _CHECKPOINT_NAMES:
        raise errors.ConfigError(f"which={which!r}: use 'latest' or 'best'.")
      self.model, self.config, self.step = load_model(target, _CHECKPOINT_NAMES[which or "latest"])
      self.tokenizer = data_lib.run_tokenizer(self.config, target)  # Decodes notes too.
    elif init_from == "online":
      if which is not None:
        raise errors.ConfigError(f"which={which!r} applies to trained runs; a pretrained "
                                 "GPT-2 has one set of weights.")
      from llmjax.data import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel
      from llmjax.pretrained import init_from as init_lib  # pylint: disable=import-outside-toplevel
      self.model, _, tokenizer_name = init_lib.load_pretrained(str(target))
      self.config, self.step = None, 0
      self.tokenizer = tokenizer_lib.get_tokenizer(tokenizer_name)
    else:
      raise errors.ConfigError(f"init_from={init_from!r}: use 'resume' (a trained run) or "
                               "'online' (a pretrained GPT-2).")
    if dtype != "float32":
      self.model = generate.cast_model(self.model, dtype)
    self.generator = generate.Generator(self.model, eot_id=self.tokenizer.eot_id)

  @classmethod
  def help_model_config(cls) -> str:
    """Prints (and returns) every argument of Sampler(...) with its default and meaning."""
    text = _arguments_help("Sampler(...) arguments:", cls.__init__, MODEL_ARGS)
    print(text)
    return text

  @classmethod
  def help_text_config(cls) -> str:
    """Prints (and returns) every argument of generate_text(...) with default and meaning."""
    text = _arguments_help("Sampler.generate_text(...) arguments:", cls.generate_text,
                           TEXT_ARGS)
    print(text)
    return text

  def export(self, out_dir: str | pathlib.Path) -> pathlib.Path:
    """Writes the model and its tokenizer as a Hugging Face GPT-2 directory."""
    from llmjax.pretrained import hf_export  # pylint: disable=import-outside-toplevel
    return hf_export.export(self.model, self.tokenizer, out_dir)

  def _seed(self, seed: int | None) -> int:
    if seed is not None:
      return seed
    return self.seed if self.seed is not None else secrets.randbits(31)

  def generate_tokens(self, prompt_tokens: list[int], max_tokens: int, *, temperature=1.0,
                      top_k=200, top_p=1.0, num_samples=1, seed=None) -> list[list[int]]:
    """The new tokens of each sample (the prompt is not repeated)."""
    params = generate.SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    return self.generator.generate([list(prompt_tokens)] * num_samples, max_tokens,
                                   params=params, seed=self._seed(seed))

  def generate_text(self, prompt: str = "\n", max_tokens: int = 100, *,
                    temperature: float = 1.0, top_k: int = 200, top_p: float = 1.0,
                    num_samples: int = 1, seed: int | None = None,
                    include_prompt: bool = True) -> str | list[str]:
    """The prompt followed by its continuation (a list when num_samples > 1)."""
    if prompt.startswith("FILE:"):
      path = pathlib.Path(prompt[len("FILE:"):]).expanduser()
      if not path.is_file():
        raise errors.SamplingError(f"prompt={prompt!r}: {path} is not a file.")
      prompt = path.read_text(encoding="utf-8")
    tokens = self.tokenizer.encode(prompt, allow_eot=True) if prompt else []
    out = self.generate_tokens(tokens, max_tokens, temperature=temperature, top_k=top_k,
                               top_p=top_p, num_samples=num_samples, seed=seed)
    texts = [(prompt if include_prompt else "") + self.tokenizer.decode(t) for t in out]
    return texts[0] if num_samples == 1 else texts
