"""`model.init_from`: start a GPT training run from a pretrained GPT-2 checkpoint.

`init_from` is `scratch` (random init), a hub id (`gpt2`, `gpt2-medium`, `gpt2-large`,
`gpt2-xl`) or a local directory with config.json + model.safetensors. The checkpoint's
config.json fixes the architecture: `resolve_model_config` copies n_layer, n_head,
n_embd, vocab_size, bias and mlp_hidden into the run config (reporting every value it
changes), so the saved config.json of the run rebuilds the same model for sampling.
`model.block_size` may be smaller than the checkpoint's context (positions are cropped).
"""

from __future__ import annotations

import jax
import ml_collections

from llmjax import errors
from llmjax.models import gpt
from llmjax.pretrained import gpt2
from llmjax.pretrained import hf_import
from llmjax.pretrained import weights

SCRATCH = "scratch"


def is_pretrained(model_cfg) -> bool:
  return str(model_cfg.get("init_from", SCRATCH) or SCRATCH) != SCRATCH


def _checkpoint_dir(init_from: str):
  try:
    return hf_import.resolve_model_dir(init_from, hf_import.download_patterns())
  except errors.LlmjaxError:
    raise
  except FileNotFoundError as e:  # Not found locally, hub unreachable or no such repo.
    raise errors.PretrainedNotFoundError(f"model.init_from={init_from!r}: {e}") from e


def resolve_model_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` whose model section matches the `model.init_from` checkpoint."""
  if not is_pretrained(config.model):
    return config
  init_from = config.model.init_from
  if config.model.get("arch", "gpt") != "gpt":
    raise errors.ConfigError(f"model.init_from={init_from!r} needs model.arch='gpt', got "
                             f"{config.model.arch!r}")
  hf = hf_import.read_config(_checkpoint_dir(init_from))
  if hf.get("model_type") != "gpt2":
    raise errors.ConfigError(f"model.init_from={init_from!r} is a {hf.get('model_type')!r} "
                             "checkpoint; GPT runs start from GPT-2 checkpoints (model_type "
                             "'gpt2')")
  fields = gpt2.model_fields(hf)
  n_positions = fields.pop("block_size")
  if config.model.block_size > n_positions:
    raise errors.ConfigError(f"model.block_size={config.model.block_size} exceeds the "
                             f"context of {init_from!r} (n_positions={n_positions}); set "
                             f"--config.model.block_size={n_positions} or less")
  resolved = ml_collections.ConfigDict(config.to_dict())
  changed = []
  for key, value in fields.items():
    if resolved.model[key] != value:
      changed.append(f"model.{key}={resolved.model[key]!r} -> {value!r}")
      resolved.model[key] = value
  if changed and jax.process_index() == 0:
    print(f"llmjax: model.init_from={init_from!r} fixes the architecture: "
          + ", ".join(changed), flush=True)
  return resolved


def pretrained_params(model_cfg, shardings):
  """The checkpoint's parameters as global arrays placed on `shardings`, or None for
  `init_from=scratch`. `model_cfg` must have gone through `resolve_model_config`."""
  if not is_pretrained(model_cfg):
    return None
  cfg = gpt.GPTConfig.from_config(model_cfg)
  model_dir = _checkpoint_dir(model_cfg.init_from)
  hf_config = hf_import.read_config(model_dir)
  gpt2.config_from_hf(hf_config, block_size=cfg.block_size)  # Unsupported options fail here.
  files = ", ".join(str(f) for f in weights.checkpoint_files(model_dir))
  host = gpt2.params_from_tensors(weights.load_tensors(model_dir), cfg, files)
  return jax.tree.map(
      lambda x, s: jax.make_array_from_callback(x.shape, s, lambda index: x[index]),
      host, shardings)
