"""Hugging Face GPT-2 checkpoints (`gpt2` ... `gpt2-xl`, local directories) as llmjax GPTs.

    model, cfg = from_hf("gpt2-xl")                        # through huggingface_hub
    model, cfg = from_hf("tests/goldens/gpt2", scan_layers=True, dtype="bfloat16")

HF stores GPT-2 projections as `Conv1D` weights of shape (in, out); the fused
c_attn (D, 3D) is reshaped to our (D, 3, H, K) and the attention output projection
(D, D) to (H, K, D). The token embedding is padded with zero rows up to the padded
vocabulary (a multiple of 64); the padded logits are cut off by `GPT.unembed`.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llmjax.models import gpt
from llmjax.util import errors

GPT2_VOCAB_SIZE = 50257
BYTE_VOCAB_SIZE = 257  # llmjax's `char` tokenizer: UTF-8 bytes and an end-of-text id.
# Activations that are GPT-2's tanh-approximated GELU under another name.
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
# Causal-mask buffers saved by old checkpoints; not parameters.
_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def check_supported(hf: dict[str, Any]) -> None:
  """Raises ValueError for GPT-2 options llmjax's GPT does not implement."""
  problems = []
  if hf.get("scale_attn_by_inverse_layer_idx", False):
    problems.append("scale_attn_by_inverse_layer_idx=True (attention scaled by 1/(layer+1))")
  if hf.get("reorder_and_upcast_attn", False):
    problems.append("reorder_and_upcast_attn=True")
  if not hf.get("scale_attn_weights", True):
    problems.append("scale_attn_weights=False (unscaled attention scores)")
  if hf.get("add_cross_attention", False):
    problems.append("add_cross_attention=True")
  act = hf.get("activation_function", "gelu_new")
  if act not in _TANH_GELU:
    problems.append(f"activation_function={act!r} (only the tanh GELU {_TANH_GELU})")
  eps = hf.get("layer_norm_epsilon", 1e-5)
  if abs(eps - 1e-5) > 1e-12:
    problems.append(f"layer_norm_epsilon={eps} (only 1e-5)")
  if not hf.get("tie_word_embeddings", True):
    problems.append("tie_word_embeddings=False (untied output layer)")
  if problems:
    raise errors.PretrainedFormatError(
      "unsupported GPT-2 option(s) in config.json: "
      + "; ".join(problems)
      + ". llmjax's GPT implements the original GPT-2 architecture only."
    )


def model_fields(hf: dict[str, Any]) -> dict[str, Any]:
  """The GPTConfig fields a GPT-2 config.json fixes (the architecture, not the numerics)."""
  check_supported(hf)
  d, h = hf.get("n_embd", 768), hf.get("n_head", 12)
  if d % h:
    raise errors.PretrainedFormatError(f"config.json has n_embd={d} not divisible by n_head={h}")
  return dict(
    vocab_size=hf.get("vocab_size", 50257),
    block_size=hf.get("n_positions", 1024),
    n_layer=hf.get("n_layer", 12),
    n_head=h,
    n_embd=d,
    bias=True,
    mlp_hidden=hf.get("n_inner") or 4 * d,
  )


def config_from_hf(hf: dict[str, Any], **overrides) -> gpt.GPTConfig:
  """A GPTConfig for a GPT-2 config.json; `overrides` change numerics or layout (dtype,
  scan_layers, remat, dropout, attention) or crop block_size below n_positions."""
  fields = model_fields(hf)
  fields["dropout"] = 0.0
  known = {f.name for f in dataclasses.fields(gpt.GPTConfig)}
  unknown = sorted(set(overrides) - known)
  if unknown:
    raise TypeError(f"unknown GPTConfig override(s) {unknown}; fields are {sorted(known)}")
  fixed = {
    k: (overrides[k], fields[k])
    for k in fields
    if k in overrides and k != "block_size" and overrides[k] != fields[k]
  }
  if fixed:
    raise errors.ConfigError(
      f"the checkpoint fixes {', '.join(f'{k}={v[1]}' for k, v in fixed.items())};"
      f" cannot override with {', '.join(f'{k}={v[0]}' for k, v in fixed.items())}"
    )
  if overrides.get("block_size", fields["block_size"]) > fields["block_size"]:
    raise errors.ConfigError(
      f"block_size={overrides['block_size']} exceeds the checkpoint's "
      f"n_positions={fields['block_size']}; use at most that"
    )
  kw = {**fields, **overrides}
  for key in ("dtype", "param_dtype"):
    if isinstance(kw.get(key), str):
      kw[key] = gpt.DTYPES[kw[key]]
  return gpt.GPTConfig(**kw)


def _strip_prefix(tensors: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
  """Removes a task-model prefix (`transformer.`) and drops buffers and the tied lm_head."""
  found = [k for k in tensors if k == "wte.weight" or k.endswith(".wte.weight")]
  if len(found) != 1:
    raise errors.PretrainedFormatError(
      f"{source} has {'no' if not found else 'several'} '[prefix.]wte.weight' "
      f"tensor(s); is it a GPT-2 checkpoint? First names: {sorted(tensors)[:8]}"
    )
  prefix = found[0][: -len("wte.weight")]
  out = {}
  for name, value in tensors.items():
    if not name.startswith(prefix) or name.endswith(_BUFFER_SUFFIXES) or name == "lm_head.weight":
      continue
    out[name[len(prefix) :]] = value
  return out


def params_from_tensors(
  tensors: dict[str, np.ndarray], cfg: gpt.GPTConfig, source: str = "checkpoint"
) -> dict[str, Any]:
  """The pure-dict parameters of `GPT(cfg)` (numpy, cfg.param_dtype) from HF GPT-2 tensors."""
  t = _strip_prefix(tensors, source)
  d, h, k, f = cfg.n_embd, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_config().mlp_dim
  dtype = np.dtype(cfg.param_dtype)
  used = set()

  def get(name, shape):
    if name not in t:
      raise errors.PretrainedFormatError(f"{source} lacks tensor {name!r}")
    value = t[name]
    if tuple(value.shape) != tuple(shape):
      raise errors.PretrainedFormatError(
        f"tensor {name!r} in {source} has shape {tuple(value.shape)}, but "
        f"config.json implies {tuple(shape)}; does config.json belong to these "
        "weights?"
      )
    used.add(name)
    return np.asarray(value, np.float32)

  def norm(name):
    return {"scale": get(f"{name}.weight", (d,)), "bias": get(f"{name}.bias", (d,))}

  wte = get("wte.weight", (cfg.vocab_size, d))
  wte = np.concatenate([wte, np.zeros((cfg.padded_vocab_size - cfg.vocab_size, d), np.float32)])
  wpe = t.get("wpe.weight")
  if wpe is None or wpe.ndim != 2 or wpe.shape[0] < cfg.block_size:
    raise errors.PretrainedFormatError(
      f"{source}: wpe.weight has shape {None if wpe is None else wpe.shape}; "
      f"need at least block_size={cfg.block_size} rows of width {d}"
    )
  wpe = get("wpe.weight", (wpe.shape[0], d))[: cfg.block_size]
  blocks = []
  for i in range(cfg.n_layer):
    p = f"h.{i}"
    blocks.append(
      {
        "ln_1": norm(f"{p}.ln_1"),
        "attn": {
          "c_attn": get(f"{p}.attn.c_attn.weight", (d, 3 * d)).reshape(d, 3, h, k),
          "c_attn_bias": get(f"{p}.attn.c_attn.bias", (3 * d,)).reshape(3, h, k),
          "c_proj": get(f"{p}.attn.c_proj.weight", (d, d)).reshape(h, k, d),
          "c_proj_bias": get(f"{p}.attn.c_proj.bias", (d,)),
        },
        "ln_2": norm(f"{p}.ln_2"),
        "mlp": {
          "c_fc": get(f"{p}.mlp.c_fc.weight", (d, f)),
          "c_fc_bias": get(f"{p}.mlp.c_fc.bias", (f,)),
          "c_proj": get(f"{p}.mlp.c_proj.weight", (f, d)),
          "c_proj_bias": get(f"{p}.mlp.c_proj.bias", (d,)),
        },
      }
    )
  if cfg.scan_layers:
    h_tree = jax.tree.map(lambda *xs: np.stack(xs), *blocks)
  else:
    h_tree = dict(enumerate(blocks))
  params = {"wte": wte, "wpe": wpe, "h": h_tree, "ln_f": norm("ln_f")}
  unused = sorted(set(t) - used)
  if unused:
    deeper = any(n.startswith(f"h.{cfg.n_layer}.") for n in unused)
    raise errors.PretrainedFormatError(
      f"{source} holds tensors this GPT-2 config does not use: {unused[:8]}"
      + (f"; it has more layers than config.json's n_layer={cfg.n_layer}" if deeper else "")
    )
  return jax.tree.map(lambda x: x.astype(dtype), params)


def build(params: dict[str, Any], cfg: gpt.GPTConfig) -> gpt.GPT:
  """A GPT module holding `params` (a pure dict as from `params_from_tensors`)."""
  abstract = nnx.eval_shape(lambda: gpt.GPT(cfg, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
  return nnx.merge(graphdef, state)


def load(
  model_dir, hf: dict[str, Any], tensors: dict[str, np.ndarray], source: str, **overrides
) -> tuple[gpt.GPT, gpt.GPTConfig]:
  cfg = config_from_hf(hf, **overrides)
  params = params_from_tensors(tensors, cfg, source)
  logging.info("GPT-2 from %s: %d layers, width %d", model_dir, cfg.n_layer, cfg.n_embd)
  return build(params, cfg), cfg


def tokenizer_name(model_dir: pathlib.Path, hf: dict[str, Any]) -> str:
  """The llmjax tokenizer name (`llmjax.data.tokenizer.get_tokenizer`) for a checkpoint:
  GPT-2's BPE for its 50257-token vocabulary, else the directory's tokenizer.json, else
  the byte tokenizer for a 257-token vocabulary."""
  vocab = hf.get("vocab_size", GPT2_VOCAB_SIZE)
  if vocab == GPT2_VOCAB_SIZE:
    return "gpt2"
  if (model_dir / "tokenizer.json").is_file():
    return f"bpe:{model_dir / 'tokenizer.json'}"
  if vocab == BYTE_VOCAB_SIZE:
    return "char"
  raise errors.DataError(
    f"{model_dir} has a vocabulary of {vocab} tokens and no tokenizer.json; put the "
    "tokenizer.json the model was trained with beside config.json"
  )
