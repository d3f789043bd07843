"""A trained llmjax GPT as a Hugging Face GPT-2 directory (the inverse of `gpt2.py`).

    export(model, tokenizer, "out/")   # config.json, model.safetensors, tokenizer files

`transformers.GPT2LMHeadModel.from_pretrained("out/")` loads the directory and
`llmjax.pretrained.from_hf("out/")` gives back the same parameters bit for bit. The
padded vocabulary rows are trimmed; a model without biases gets zero biases (the same
function); a progressive model is exported as its plain GPT with the LoRA adapters
merged (`progressive.to_gpt`). Conv-attention has no GPT-2 counterpart and is refused.

Tokenizer files: GPT-2's BPE (`gpt2`) becomes tokenizer.json + vocab.json + merges.txt
rebuilt from its ranks; the byte tokenizer (`char`) a byte-level tokenizer with no merges
(id = byte value, 256 = `<|endoftext|>`); a `bpe:` tokenizer.json is copied; a notes
model's note strings are added tokens after the base vocabulary, at their ids.

Writing is all or nothing and touches nothing else: the files are built in a new temporary
directory beside `out_dir` and renamed into place, so a crash leaves the old directory (or
none) and never a mix, and no file is ever written through a symlink. An `out_dir` that
is a file or a symlink is refused; a non-empty one only with `overwrite=True`, which
replaces the directory as a whole and is refused when it holds anything the export would
not write again (a user's own files are never deleted).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

import numpy as np
import tokenizers
from flax import nnx
from safetensors import numpy as safetensors_numpy
from tokenizers import decoders, models, pre_tokenizers

from llmjax.models import gpt, progressive
from llmjax.pretrained import weights
from llmjax.util import assets, errors, fileio

EOT_TEXT = "<|endoftext|>"


def as_gpt(model: nnx.Module) -> gpt.GPT:
  """The plain GPT a model exports as, or an error naming what cannot be exported."""
  if isinstance(model, progressive.ProgressiveGPT):
    return progressive.to_gpt(model)
  if type(model) is not gpt.GPT:  # pylint: disable=unidiomatic-typecheck
    raise errors.ConfigError(
      f"cannot export a {type(model).__name__}: the GPT-2 format holds plain GPTs "
      "(model.arch='gpt', or 'progressive' with its adapters merged); conv-attention's "
      "compressor and expander have no GPT-2 counterpart."
    )
  return model


def hf_config(cfg: gpt.GPTConfig, eot_id: int) -> dict[str, Any]:
  """The GPT-2 config.json of a GPTConfig."""
  return {
    "architectures": ["GPT2LMHeadModel"],
    "model_type": "gpt2",
    "vocab_size": cfg.vocab_size,
    "n_positions": cfg.block_size,
    "n_ctx": cfg.block_size,
    "n_embd": cfg.n_embd,
    "n_layer": cfg.n_layer,
    "n_head": cfg.n_head,
    "n_inner": cfg.block_config().mlp_dim,
    "activation_function": "gelu_new",
    "layer_norm_epsilon": 1e-5,
    "resid_pdrop": cfg.dropout,
    "embd_pdrop": cfg.dropout,
    "attn_pdrop": cfg.dropout,
    "initializer_range": 0.02,
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False,
    "tie_word_embeddings": True,
    "use_cache": True,
    "bos_token_id": eot_id,
    "eos_token_id": eot_id,
    "torch_dtype": "float32",
  }


def tensors_from_params(params: dict[str, Any], cfg: gpt.GPTConfig) -> dict[str, np.ndarray]:
  """HF GPT-2 tensors (float32, Conv1D layout) of `GPT(cfg)`'s pure-dict parameters."""
  d, f = cfg.n_embd, cfg.block_config().mlp_dim
  f32 = lambda x: np.ascontiguousarray(np.asarray(x, np.float32))  # noqa: E731

  def bias(tree, name, size):
    return f32(tree[name]) if name in tree else np.zeros((size,), np.float32)

  out = {
    "wte.weight": f32(params["wte"])[: cfg.vocab_size],
    "wpe.weight": f32(params["wpe"]),
    "ln_f.weight": f32(params["ln_f"]["scale"]),
    "ln_f.bias": bias(params["ln_f"], "bias", d),
  }
  for i in range(cfg.n_layer):
    block = _block(params["h"], i, cfg.scan_layers)
    p, attn, mlp = f"h.{i}", block["attn"], block["mlp"]
    for norm in ("ln_1", "ln_2"):
      out[f"{p}.{norm}.weight"] = f32(block[norm]["scale"])
      out[f"{p}.{norm}.bias"] = bias(block[norm], "bias", d)
    out[f"{p}.attn.c_attn.weight"] = f32(attn["c_attn"]).reshape(d, 3 * d)
    out[f"{p}.attn.c_attn.bias"] = bias(attn, "c_attn_bias", 3 * d).reshape(3 * d)
    out[f"{p}.attn.c_proj.weight"] = f32(attn["c_proj"]).reshape(d, d)
    out[f"{p}.attn.c_proj.bias"] = bias(attn, "c_proj_bias", d)
    out[f"{p}.mlp.c_fc.weight"] = f32(mlp["c_fc"])
    out[f"{p}.mlp.c_fc.bias"] = bias(mlp, "c_fc_bias", f)
    out[f"{p}.mlp.c_proj.weight"] = f32(mlp["c_proj"])
    out[f"{p}.mlp.c_proj.bias"] = bias(mlp, "c_proj_bias", d)
  return out


def _block(h: dict[Any, Any], i: int, scanned: bool) -> dict[str, Any]:
  """Block `i` of the `h` subtree: stacked along axis 0 when scanned, else keyed by i."""
  if not scanned:
    return h[i]
  return _map(lambda x: np.asarray(x)[i], h)


def _map(fn, tree):
  return {k: _map(fn, v) for k, v in tree.items()} if isinstance(tree, dict) else fn(tree)


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's printable stand-in character for each byte (its vocab.json alphabet)."""
  keep = [
    *range(ord("!"), ord("~") + 1),
    *range(ord("¡"), ord("¬") + 1),
    *range(ord("®"), ord("ÿ") + 1),
  ]
  chars, extra = {}, 0
  for b in range(256):
    if b in keep:
      chars[b] = chr(b)
    else:
      chars[b] = chr(256 + extra)
      extra += 1
  return chars


def _merge_parts(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
  """The two tokens BPE merges into `token`: replay the merges of lower rank."""
  rank, parts = ranks[token], [bytes([b]) for b in token]
  while len(parts) > 2:
    best = min((ranks.get(parts[i] + parts[i + 1], rank), i) for i in range(len(parts) - 1))
    if best[0] >= rank:
      break
    i = best[1]
    parts[i : i + 2] = [parts[i] + parts[i + 1]]
  if len(parts) != 2:
    raise ValueError(f"token {token!r} of rank {rank} is not one merge of lower-rank tokens")
  return parts[0], parts[1]


def _byte_level_tokenizer(ranks: dict[bytes, int], eot_id: int):
  """A `tokenizers` byte-level BPE with GPT-2's pre-tokenizer, these ranks and EOT."""
  to_char = _bytes_to_unicode()
  text = lambda b: "".join(to_char[x] for x in b)  # noqa: E731
  vocab = {text(token): rank for token, rank in ranks.items()}
  merges = [
    tuple(text(p) for p in _merge_parts(ranks, token))
    for token, _ in sorted(ranks.items(), key=lambda kv: kv[1])
    if len(token) > 1
  ]
  tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  added = tok.add_special_tokens([tokenizers.AddedToken(EOT_TEXT, special=True)])
  if added != 1 or tok.token_to_id(EOT_TEXT) != eot_id:
    raise ValueError(f"{EOT_TEXT} landed at id {tok.token_to_id(EOT_TEXT)}, not {eot_id}")
  return tok


def hf_tokenizer(tokenizer):
  """A `tokenizers.Tokenizer` with the same ids as an llmjax tokenizer."""
  base = getattr(tokenizer, "base", tokenizer)  # A notes tokenizer extends a base one.
  if base.name == "gpt2":
    tok = _byte_level_tokenizer(assets.gpt2_bpe_ranks(), base.eot_id)
  elif base.name == "char":
    tok = _byte_level_tokenizer({bytes([b]): b for b in range(256)}, base.eot_id)
  elif base.name.startswith("bpe:"):
    tok = tokenizers.Tokenizer.from_file(base.name[len("bpe:") :])
  else:
    raise errors.ConfigError(f"cannot write Hugging Face files for tokenizer {base.name!r}")
  notes = getattr(tokenizer, "notes", ())
  if notes:
    if tok.get_vocab_size(with_added_tokens=True) != base.vocab_size:
      raise ValueError(
        f"{base.name} has {tok.get_vocab_size(with_added_tokens=True)} ids in "
        f"its tokenizer.json but {base.vocab_size} in llmjax"
      )
    tok.add_tokens([tokenizers.AddedToken(n, normalized=False) for n in notes])
  return tok


def write_tokenizer(tokenizer, out: pathlib.Path, block_size: int) -> None:
  tok = hf_tokenizer(tokenizer)
  tok.save(str(out / "tokenizer.json"))
  if getattr(tokenizer, "base", tokenizer).name in ("gpt2", "char"):
    tok.model.save(str(out))  # vocab.json + merges.txt, for the slow GPT2Tokenizer.
  special = {"bos_token": EOT_TEXT, "eos_token": EOT_TEXT, "unk_token": EOT_TEXT}
  (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
  (out / "tokenizer_config.json").write_text(
    json.dumps(
      {
        **special,
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": block_size,
        "add_prefix_space": False,
      },
      indent=2,
    )
    + "\n"
  )


def check_destination(out: pathlib.Path, overwrite: bool) -> bool:
  """Whether `out` holds files to replace; refuses a file, a symlink or (without
  `overwrite`) a non-empty directory."""
  if out.is_symlink():
    raise errors.ConfigError(
      f"export destination {str(out)!r} is a symlink; give a real directory (export never "
      "writes through symlinks)"
    )
  if out.exists() and not out.is_dir():
    raise errors.ConfigError(
      f"export destination {str(out)!r} is a file, not a directory; give a new or empty directory"
    )
  if not out.is_dir() or not any(out.iterdir()):
    return False
  if not overwrite:
    raise errors.ConfigError(
      f"export destination {str(out)!r} is not empty ({', '.join(sorted(os.listdir(out))[:5])}"
      f"{', ...' if len(os.listdir(out)) > 5 else ''}); give a new or empty directory, or "
      "--overwrite to replace a previous export there"
    )
  return True


def export(
  model: nnx.Module, tokenizer, out_dir: str | pathlib.Path, *, overwrite: bool = False
) -> pathlib.Path:
  """Writes `model` (and `tokenizer`'s files) as a Hugging Face GPT-2 directory.

  `out_dir` must be new or empty; with `overwrite`, a previous export there is replaced
  whole (refused if it holds other files). See the module docstring.
  """
  model = as_gpt(model)
  cfg = model.cfg
  if tokenizer.vocab_size > cfg.vocab_size:
    raise errors.ConfigError(
      f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} ids "
      f"but the model only {cfg.vocab_size}"
    )
  out = pathlib.Path(out_dir).expanduser()
  replace = check_destination(out, overwrite)
  out.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.export-"))
  old = None
  try:
    tensors = tensors_from_params(nnx.to_pure_dict(nnx.state(model, nnx.Param)), cfg)
    safetensors_numpy.save_file(tensors, staging / weights.SAFETENSORS, metadata={"format": "pt"})
    (staging / "config.json").write_text(
      json.dumps(hf_config(cfg, tokenizer.eot_id), indent=2) + "\n"
    )
    write_tokenizer(tokenizer, staging, cfg.block_size)
    staging.chmod(0o755)
    for path in staging.iterdir():
      path.chmod(0o644)
      fileio.fsync_path(path)
    fileio.fsync_path(staging)
    if replace:
      others = sorted(set(os.listdir(out)) - set(os.listdir(staging)))
      if others:
        raise errors.ConfigError(
          f"export destination {str(out)!r} holds files an export does not write "
          f"({', '.join(others[:5])}); --overwrite replaces only a previous export, so "
          "move them or give another directory"
        )
      old = pathlib.Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
      os.rename(out, old / "previous")  # The symlinks of a cache snapshot move, unfollowed.
    try:
      os.rename(staging, out)  # Onto a missing or empty directory only.
    except OSError:
      if old is not None:
        os.rename(old / "previous", out)
      raise
    fileio.fsync_path(out.parent)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)  # Removes links, never what they point to.
  return out
