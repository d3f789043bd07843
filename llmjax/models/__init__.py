"""Model registry: `build(model_config, seed)` returns an NNX module whose call on int
tokens `[B, T]` returns float32 logits `[B, T, vocab]`.

Each architecture owns its config: a frozen dataclass in its model file whose fields are
exactly the keys of its `model` config section (besides `arch`), each with its comment
(`models.sections`). `defaults(arch)` and `comments(arch)` give the section the config
schema declares for `arch`; a key the arch does not declare is refused, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable

from flax import nnx

from llmjax.models import conv_attention, gpt, progressive, sections
from llmjax.util import errors

# arch name -> (config dataclass, module class)
REGISTRY: dict[str, tuple[type, Callable[..., nnx.Module]]] = {
  "gpt": (gpt.GPTConfig, gpt.GPT),
  "conv_attention": (conv_attention.ConvAttentionConfig, conv_attention.ConvAttention),
  "progressive": (progressive.ProgressiveConfig, progressive.ProgressiveGPT),
}


def config_class(arch: str) -> type:
  """The config dataclass of `model.arch=arch`."""
  if arch not in REGISTRY:
    raise errors.ConfigError(
      f"Unknown model.arch={arch!r}; available: {', '.join(sorted(REGISTRY))}."
    )
  return REGISTRY[arch][0]


def keys(arch: str) -> list[str]:
  """The keys of `arch`'s `model` section besides `arch`, in declaration order."""
  return sections.field_names(config_class(arch))


def defaults(arch: str) -> dict:
  """{key: default} of `arch`'s `model` section besides `arch` (dtypes by name)."""
  return sections.defaults(config_class(arch))


def comments(arch: str) -> dict[str, str]:
  """{key: help text} of `arch`'s `model` section: the comment after each field."""
  return sections.comments(config_class(arch))


def owners(key: str) -> tuple[str, ...]:
  """The architectures whose config declares `key`."""
  return tuple(a for a in REGISTRY if key in keys(a))


def undeclared_key_error(key: str, arch: str) -> errors.ConfigError:
  """One line: `model.KEY` is not a key of `arch`, the closest key it has, and the
  architectures that declare KEY."""
  return sections.undeclared_key_error(key, arch, keys(arch), owners(key))


def section_for(arch: str, shared) -> dict:
  """`arch`'s section from a section `shared` of any arch: the keys `arch` declares take
  their value from `shared` where it has them, the others their defaults (used to run one
  config's shape on several architectures)."""
  out = {"arch": arch, **defaults(arch)}
  out.update({k: v for k, v in dict(shared).items() if k in out and k != "arch"})
  return out


def model_config(model_cfg):
  """The frozen dataclass for a `model` config section (or a dataclass, returned as is).
  A key the section's arch does not declare is a ConfigError naming the closest one."""
  if not hasattr(model_cfg, "get"):
    return model_cfg
  arch = model_cfg.get("arch", "gpt")
  cls = config_class(arch)
  for key in model_cfg:
    if key != "arch" and key not in keys(arch):
      raise undeclared_key_error(key, arch)
  return cls.from_config(model_cfg)


def build(model_cfg, seed: int = 0) -> nnx.Module:
  """Builds the module for `model_cfg` (a `model` section or a config dataclass) with
  parameters initialised from `seed`."""
  cfg = model_config(model_cfg)
  return REGISTRY[arch_of(cfg)][1](cfg, rngs=nnx.Rngs(params=seed))


def arch_of(cfg) -> str:
  """The registered arch whose config class `cfg` is (the most derived one)."""
  for klass in type(cfg).__mro__:
    for name, (config_cls, _) in REGISTRY.items():
      if klass is config_cls:
        return name
  raise ValueError(f"No registered architecture uses {type(cfg).__name__}.")
