"""Model registry: `build(model_config, seed)` returns an NNX module whose call on int
tokens `[B, T]` returns float32 logits `[B, T, vocab]`."""

from __future__ import annotations

from collections.abc import Callable

from flax import nnx

from llmjax.models import conv_attention, gpt, progressive
from llmjax.util import errors

# arch name -> (config dataclass, module class)
REGISTRY: dict[str, tuple[type, Callable[..., nnx.Module]]] = {
  "gpt": (gpt.GPTConfig, gpt.GPT),
  "conv_attention": (conv_attention.ConvAttentionConfig, conv_attention.ConvAttention),
  "progressive": (progressive.ProgressiveConfig, progressive.ProgressiveGPT),
}


def model_config(model_cfg):
  """The frozen dataclass for a `model` config section (or a dataclass, returned as is)."""
  arch = model_cfg.get("arch", "gpt") if hasattr(model_cfg, "get") else None
  if arch is None:
    return model_cfg
  if arch not in REGISTRY:
    raise errors.ConfigError(
      f"Unknown model.arch={arch!r}; available: {', '.join(sorted(REGISTRY))}."
    )
  return REGISTRY[arch][0].from_config(model_cfg)


def build(model_cfg, seed: int = 0) -> nnx.Module:
  """Builds the module for `model_cfg` with parameters initialised from `seed`."""
  arch = model_cfg.get("arch", "gpt") if hasattr(model_cfg, "get") else _arch_of(model_cfg)
  cfg = model_config(model_cfg)
  return REGISTRY[arch][1](cfg, rngs=nnx.Rngs(params=seed))


def _arch_of(cfg) -> str:
  for name, (config_cls, _) in REGISTRY.items():
    if isinstance(cfg, config_cls):
      return name
  raise ValueError(f"No registered architecture uses {type(cfg).__name__}.")
