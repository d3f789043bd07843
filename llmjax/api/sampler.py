"""`Sampler`: text from a trained run or a pretrained GPT-2.

from llmjax import Sampler
print(Sampler(out_dir="runs/kafka", seed=None).generate_text("My name is", max_tokens=50))
print(Sampler(init_from="online", out_dir="gpt2").generate_text("Today I decided to"))
"""

from __future__ import annotations

import inspect
import pathlib
import secrets

from llmjax import data as data_lib
from llmjax.data import tokenizer as tokenizer_lib
from llmjax.inference import generate
from llmjax.pretrained import hf_export
from llmjax.pretrained import init_from as init_lib
from llmjax.runs import load as run_load
from llmjax.util import errors

# Meanings of the Sampler's and generate_text's arguments (defaults come from the
# signatures, so help and behaviour cannot drift apart).
MODEL_ARGS = {
  "workdir": "Run directory written by training (same as out_dir).",
  "seed": "Sampling seed: an int makes every call repeatable; None draws a fresh seed per call.",
  "which": "Which checkpoint of a run: 'latest' (None) or 'best' (lowest validation loss).",
  "out_dir": "init_from='resume': the run directory. init_from='online': gpt2, "
  "gpt2-medium, gpt2-large, gpt2-xl (downloaded once from the Hugging Face hub "
  "and cached) or a local Hugging Face GPT-2 directory.",
  "init_from": "'resume' (a trained run in out_dir) or 'online' (a pretrained GPT-2).",
  "checkpoint_name": "Same as which ('last' is accepted for 'latest').",
  "dtype": "Inference dtype: float32, bfloat16 (parameters cast, matmuls and KV cache "
  "in bfloat16) or int8 (int8 weights with per-channel scales, int8 activations; GPT "
  "models); see docs/performance.md for what each costs and gains.",
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

  def __init__(
    self,
    workdir: str | pathlib.Path | None = None,
    seed: int | None = 0,
    which: str | None = None,
    *,
    out_dir: str | pathlib.Path | None = None,
    init_from: str = "resume",
    checkpoint_name: str | None = None,
    dtype: str = "float32",
  ):
    if workdir is not None and out_dir is not None:
      raise errors.ConfigError("Pass workdir= or out_dir=, not both.")
    if which is not None and checkpoint_name is not None:
      raise errors.ConfigError("Pass which= or checkpoint_name=, not both.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
      raise errors.SamplingError(
        f"seed={seed!r} must be an int, or None for a fresh seed per call."
      )
    target = workdir if workdir is not None else out_dir
    if target is None:
      raise errors.ConfigError(
        "Sampler needs out_dir= (a run directory, or with "
        "init_from='online' a GPT-2 name such as 'gpt2')."
      )
    which = which or checkpoint_name
    self.seed = seed
    if init_from == "resume":
      if which is not None and which not in run_load.CHECKPOINT_NAMES:
        raise errors.ConfigError(f"which={which!r}: use 'latest' or 'best'.")
      self.model, self.config, self.step = run_load.load_model(
        target, run_load.CHECKPOINT_NAMES[which or "latest"]
      )
      self.tokenizer = data_lib.run_tokenizer(self.config, target)  # Decodes notes too.
    elif init_from == "online":
      if which is not None:
        raise errors.ConfigError(
          f"which={which!r} applies to trained runs; a pretrained GPT-2 has one set of weights."
        )
      self.model, _, tokenizer_name = init_lib.load_pretrained(str(target))
      self.config, self.step = None, 0
      self.tokenizer = tokenizer_lib.get_tokenizer(tokenizer_name)
    else:
      raise errors.ConfigError(
        f"init_from={init_from!r}: use 'resume' (a trained run) or 'online' (a pretrained GPT-2)."
      )
    if dtype != "float32":
      self.model = generate.inference_model(self.model, dtype)
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
    text = _arguments_help("Sampler.generate_text(...) arguments:", cls.generate_text, TEXT_ARGS)
    print(text)
    return text

  def export(self, out_dir: str | pathlib.Path, *, overwrite: bool = False) -> pathlib.Path:
    """Writes the model and its tokenizer as a Hugging Face GPT-2 directory (new or empty;
    `overwrite=True` replaces a previous export there)."""
    return hf_export.export(self.model, self.tokenizer, out_dir, overwrite=overwrite)

  def _seed(self, seed: int | None) -> int:
    if seed is not None:
      return seed
    return self.seed if self.seed is not None else secrets.randbits(31)

  def generate_tokens(
    self,
    prompt_tokens: list[int],
    max_tokens: int,
    *,
    temperature=1.0,
    top_k=200,
    top_p=1.0,
    num_samples=1,
    seed=None,
  ) -> list[list[int]]:
    """The new tokens of each sample (the prompt is not repeated)."""
    params = generate.SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    return self.generator.generate(
      [list(prompt_tokens)] * num_samples, max_tokens, params=params, seed=self._seed(seed)
    )

  def generate_text(
    self,
    prompt: str = "\n",
    max_tokens: int = 100,
    *,
    temperature: float = 1.0,
    top_k: int = 200,
    top_p: float = 1.0,
    num_samples: int = 1,
    seed: int | None = None,
    include_prompt: bool = True,
  ) -> str | list[str]:
    """The prompt followed by its continuation (a list when num_samples > 1)."""
    if prompt.startswith("FILE:"):
      path = pathlib.Path(prompt[len("FILE:") :]).expanduser()
      if not path.is_file():
        raise errors.SamplingError(f"prompt={prompt!r}: {path} is not a file.")
      try:
        prompt = path.read_text(encoding="utf-8")
      except UnicodeDecodeError as e:
        raise errors.SamplingError(
          f"prompt={prompt!r}: {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at "
          f"offset {e.start}); save the prompt file as UTF-8."
        ) from None
    tokens = self.tokenizer.encode_prompt(prompt) if prompt else []
    out = self.generate_tokens(
      tokens,
      max_tokens,
      temperature=temperature,
      top_k=top_k,
      top_p=top_p,
      num_samples=num_samples,
      seed=seed,
    )
    texts = [(prompt if include_prompt else "") + self.tokenizer.decode(t) for t in out]
    return texts[0] if num_samples == 1 else texts
