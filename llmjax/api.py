"""Python API: `Trainer` does what `python -m llmjax.main` does; `Sampler` generates text
from a trained workdir.

  from llmjax import Trainer, Sampler
  Trainer(workdir="runs/book", config="configs/book.py:cpu", data__path="book.txt").run()
  print(Sampler("runs/book").generate_text("It was the best of times", 50))
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import ml_collections
from flax import nnx

from llmjax import config_util
from llmjax import errors
from llmjax import data as data_lib
from llmjax import generate
from llmjax import models
from llmjax.train import checkpoint as ckpt_lib


class Trainer:
  """Trains (or resumes) the run in `workdir`.

  `config` is a path spec (`configs/book.py:cpu`) or a ConfigDict; keyword overrides use
  `section__key=value` (or pass a dict to `overrides` with dotted keys).
  """

  def __init__(self, workdir: str, config: str | ml_collections.ConfigDict = "configs/shakespeare.py",
               overrides: dict[str, Any] | None = None, **kw_overrides):
    self.workdir = pathlib.Path(workdir)
    if isinstance(config, str):
      config = config_util.load_config(config)
    self.config = ml_collections.ConfigDict(config.to_dict())
    overrides = {**(overrides or {}), **kw_overrides}
    config_util.apply_overrides(self.config, overrides)
    config_util.validate(self.config)
    from llmjax import jobs  # pylint: disable=import-outside-toplevel
    jobs.check_overrides(self.config, overrides)

  @staticmethod
  def help_config(config: str = "configs/shakespeare.py") -> str:
    text = config_util.help_text(config_util.load_config(config), config)
    print(text)
    return text

  def run(self):
    from llmjax import jobs  # pylint: disable=import-outside-toplevel
    return jobs.run(self.config, self.workdir)


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


class Sampler:
  """Generates text from a trained run directory."""

  def __init__(self, workdir: str | pathlib.Path, seed: int = 0, which: str = "latest"):
    self.model, self.config, self.step = load_model(workdir, which)
    self.tokenizer = data_lib.run_tokenizer(self.config, workdir)  # Decodes notes too.
    self.generator = generate.Generator(self.model, eot_id=self.tokenizer.eot_id)
    self.seed = seed

  def generate_tokens(self, prompt_tokens: list[int], max_tokens: int, *, temperature=0.8,
                      top_k=0, top_p=1.0, num_samples=1, seed=None) -> list[list[int]]:
    params = generate.SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    return self.generator.generate([list(prompt_tokens)] * num_samples, max_tokens,
                                   params=params, seed=self.seed if seed is None else seed)

  def generate_text(self, prompt: str, max_tokens: int, *, temperature=0.8, top_k=0, top_p=1.0,
                    num_samples=1, seed=None) -> str | list[str]:
    """Returns the continuation (without the prompt); a list when num_samples > 1."""
    out = self.generate_tokens(self.tokenizer.encode(prompt) if prompt else [], max_tokens,
                               temperature=temperature, top_k=top_k, top_p=top_p,
                               num_samples=num_samples, seed=seed)
    texts = [self.tokenizer.decode(t) for t in out]
    return texts[0] if num_samples == 1 else texts
