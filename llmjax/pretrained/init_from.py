"""`model.init_from`: start a GPT training run from a pretrained GPT-2 checkpoint.

`init_from` is `scratch` (random init), a hub id (`gpt2`, `gpt2-medium`, `gpt2-large`,
`gpt2-xl`) or a local directory with config.json + model.safetensors. The checkpoint's
config.json fixes the architecture: `resolve_model_config` copies n_layer, n_head,
n_embd, vocab_size, bias and mlp_hidden into the run config (reporting every value it
changes), so the saved config.json of the run rebuilds the same model for sampling.
`model.block_size` may be smaller than the checkpoint's context (positions are cropped).

`checkpoint_dir` is the one way to a local GPT-2 directory: a hub id is downloaded once
through `huggingface_hub` (with its progress bars, into its cache, `HF_HOME`), and a hub
that cannot be reached is one `DownloadError` line that says what to do.
"""

from __future__ import annotations

import pathlib

import jax
import ml_collections

from llmjax.models import gpt
from llmjax.pretrained import gpt2, hf_import, weights
from llmjax.util import errors

SCRATCH = "scratch"
# Hub ids of the four OpenAI GPT-2 checkpoints: (n_layer, n_head, n_embd, parameters).
GPT2_SIZES = {
  "gpt2": (12, 12, 768, "124M"),
  "gpt2-medium": (24, 16, 1024, "355M"),
  "gpt2-large": (36, 20, 1280, "774M"),
  "gpt2-xl": (48, 25, 1600, "1558M"),
}


def gpt2_hub_name(init_from: str) -> str | None:
  """The GPT-2 hub id (`gpt2`, `gpt2-medium`, ...) that `init_from` names, with or without
  an `@REVISION` pin; None for anything else (a local directory, another hub id)."""
  if pathlib.Path(init_from).expanduser().exists():
    return None
  name = hf_import.split_revision(init_from)[0]
  return name if name in GPT2_SIZES else None


def is_pretrained(model_cfg) -> bool:
  return str(model_cfg.get("init_from", SCRATCH) or SCRATCH) != SCRATCH


def checkpoint_dir(init_from: str) -> pathlib.Path:
  """The local directory of a GPT-2 checkpoint: `init_from` itself, or its hub download."""
  try:
    return hf_import.resolve_model_dir(init_from, hf_import.download_patterns())
  except FileNotFoundError as e:
    if e.__cause__ is None:  # A local path that is not there.
      raise errors.AssetError(f"model {init_from!r}: {e}") from None
    cause = e.__cause__
    reason = (str(cause).strip().splitlines() or [""])[0].rstrip(".")
    known = "" if gpt2_hub_name(init_from) else f" (GPT-2 hub ids: {', '.join(GPT2_SIZES)})"
    raise errors.DownloadError(
      f"could not fetch {init_from!r}{known} from the Hugging Face hub "
      f"({type(cause).__name__}: {reason}). Connect to the network (or set HF_ENDPOINT to "
      "a mirror) and retry: the download is cached, so this happens once. Or pass a local "
      "directory holding config.json and model.safetensors."
    ) from None


def checkpoint_commit(init_from: str) -> str | None:
  """The hub commit the checkpoint `init_from` names was downloaded from (its snapshot
  directory), pinned or not; None for a local directory."""
  if pathlib.Path(init_from).expanduser().exists():
    return None
  return hf_import.hub_revision(checkpoint_dir(init_from))


def resolve_model_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` whose model section matches the `model.init_from` checkpoint."""
  if not is_pretrained(config.model):
    return config
  init_from = config.model.init_from
  if config.model.get("arch", "gpt") != "gpt":
    raise errors.ConfigError(
      f"model.init_from={init_from!r} needs model.arch='gpt', got {config.model.arch!r}"
    )
  hf = hf_import.read_config(checkpoint_dir(init_from))
  if hf.get("model_type") != "gpt2":
    raise errors.ConfigError(
      f"model.init_from={init_from!r} is a {hf.get('model_type')!r} "
      "checkpoint; GPT runs start from GPT-2 checkpoints (model_type "
      "'gpt2')"
    )
  fields = gpt2.model_fields(hf)
  n_positions = fields.pop("block_size")
  if config.model.block_size > n_positions:
    raise errors.ConfigError(
      f"model.block_size={config.model.block_size} exceeds the "
      f"context of {init_from!r} (n_positions={n_positions}); set "
      f"--config.model.block_size={n_positions} or less"
    )
  resolved = ml_collections.ConfigDict(config.to_dict())
  changed = []
  for key, value in fields.items():
    if resolved.model[key] != value:
      changed.append(f"model.{key}={resolved.model[key]!r} -> {value!r}")
      resolved.model[key] = value
  if changed and jax.process_index() == 0:
    print(
      f"llmjax: model.init_from={init_from!r} fixes the architecture: " + ", ".join(changed),
      flush=True,
    )
  return resolved


def pretrained_params(model_cfg, shardings):
  """The checkpoint's parameters as global arrays placed on `shardings`, or None for
  `init_from=scratch`. `model_cfg` must have gone through `resolve_model_config`."""
  if not is_pretrained(model_cfg):
    return None
  cfg = gpt.GPTConfig.from_config(model_cfg)
  model_dir = checkpoint_dir(model_cfg.init_from)
  hf_config = hf_import.read_config(model_dir)
  gpt2.config_from_hf(hf_config, block_size=cfg.block_size)  # Unsupported options fail here.
  files = ", ".join(str(f) for f in weights.checkpoint_files(model_dir))
  host = gpt2.params_from_tensors(weights.load_tensors(model_dir), cfg, files)
  return jax.tree.map(
    lambda x, s: jax.make_array_from_callback(x.shape, s, lambda index: x[index]), host, shardings
  )


def load_pretrained(spec: str, **overrides) -> tuple[gpt.GPT, gpt.GPTConfig, str]:
  """A GPT-2 checkpoint (hub id or local directory) as a GPT, with its GPTConfig and the
  name of its tokenizer (`llmjax.data.tokenizer.get_tokenizer`). `overrides` as `from_hf`."""
  model_dir = checkpoint_dir(spec)
  try:
    hf = hf_import.read_config(model_dir)
    if hf.get("model_type") != "gpt2":
      raise ValueError(
        f"it is a {hf.get('model_type')!r} checkpoint, not GPT-2 (model_type 'gpt2')"
      )
    model, cfg = hf_import.from_hf(model_dir, **overrides)
  except (ValueError, KeyError, FileNotFoundError) as e:
    raise errors.AssetError(f"model {spec!r} ({model_dir}): {e}") from e
  return model, cfg, gpt2.tokenizer_name(model_dir, hf)


def tokenizer_for(init_from: str) -> str | None:
  """The tokenizer of a checkpoint named by `init_from`, without downloading anything:
  known for the four GPT-2 hub ids (pinned or not) and for local directories; None
  otherwise."""
  if gpt2_hub_name(init_from):
    return "gpt2"
  path = pathlib.Path(init_from).expanduser()
  if (path / hf_import.CONFIG).is_file():
    return gpt2.tokenizer_name(path, hf_import.read_config(path))
  return None
