"""Export to a Hugging Face GPT-2 directory: round trip through from_hf, tokenizer files."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
from flax import nnx

from llmjax.data import notes as notes_lib
from llmjax.data import tokenizer as tokenizer_lib
from llmjax.models import conv_attention, gpt, progressive
from llmjax.pretrained import from_hf, hf_export
from llmjax.util import errors

TINY = dict(vocab_size=257, block_size=16, n_layer=2, n_head=2, n_embd=16)
_forward = nnx.jit(lambda m, x: m(x))
TOKENS = np.arange(2 * 16, dtype=np.int32).reshape(2, 16) * 7 % 257


def _params(model):
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("scan_layers", [False, True])
def test_round_trip_is_bit_identical(tmp_path, scan_layers):
  model = gpt.GPT(gpt.GPTConfig(**TINY, scan_layers=scan_layers), rngs=nnx.Rngs(1))
  out = hf_export.export(model, tokenizer_lib.get_tokenizer("char"), tmp_path)
  hf = json.loads((out / "config.json").read_text())
  assert (hf["model_type"], hf["vocab_size"], hf["n_positions"], hf["n_inner"]) == (
    "gpt2",
    257,
    16,
    64,
  )
  back, cfg = from_hf(out, scan_layers=scan_layers)
  want, got = _params(model), _params(back)
  # The padding rows (never used: logits stop at vocab_size) are trimmed, read back as 0.
  assert cfg.padded_vocab_size == 320 and not got["wte"][257:].any()
  want["wte"], got["wte"] = want["wte"][:257], got["wte"][:257]
  jax.tree.map(np.testing.assert_array_equal, got, want)


def test_no_bias_model_exports_zero_biases_with_the_same_logits(tmp_path):
  model = gpt.GPT(gpt.GPTConfig(**TINY, bias=False), rngs=nnx.Rngs(2))
  back, _ = from_hf(hf_export.export(model, tokenizer_lib.get_tokenizer("char"), tmp_path))
  assert not np.asarray(back.h[0].attn.c_attn_bias[...]).any()
  np.testing.assert_allclose(
    np.asarray(_forward(back, TOKENS)), np.asarray(_forward(model, TOKENS)), atol=1e-5
  )


def test_progressive_exports_its_merged_gpt_and_conv_attention_is_refused(tmp_path):
  cfg = progressive.ProgressiveConfig(
    **{**TINY, "n_layer": 4}, stage=2, stage_groups=(1, 2, 4), lora_rank=2
  )
  model = progressive.ProgressiveGPT(cfg, rngs=nnx.Rngs(3))
  for block in model.h:  # Non-zero adapters, so merging them matters.
    for name in ("lora_qkv_b", "lora_proj_b"):
      var = getattr(block.attn, name)
      var[...] = jnp.full(var[...].shape, 0.05, var[...].dtype)
  back, _ = from_hf(hf_export.export(model, tokenizer_lib.get_tokenizer("char"), tmp_path))
  np.testing.assert_allclose(
    np.asarray(_forward(back, TOKENS)), np.asarray(_forward(model, TOKENS)), atol=1e-5
  )
  conv = conv_attention.ConvAttention(
    conv_attention.ConvAttentionConfig(
      vocab_size=257, block_size=16, n_head=2, n_embd=16, fan_in=2, n_levels=2
    ),
    rngs=nnx.Rngs(0),
  )
  with pytest.raises(errors.ConfigError, match="conv-attention.*no GPT-2 counterpart"):
    hf_export.export(conv, tokenizer_lib.get_tokenizer("char"), tmp_path / "conv")


def test_tokenizer_files_give_the_same_ids(tmp_path):
  text = "It's a  test,\n\n  of   GPT-2 BPE: ünïcödé 東京 1234567.\t"
  gpt2 = tokenizer_lib.get_tokenizer("gpt2")
  hf_export.write_tokenizer(gpt2, tmp_path, 1024)
  tok = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
  assert tok.encode(text).ids == gpt2.encode(text)
  assert tok.token_to_id("<|endoftext|>") == 50256
  assert {"vocab.json", "merges.txt", "tokenizer_config.json"} <= {
    p.name for p in tmp_path.iterdir()
  }
  notes = notes_lib.NotesTokenizer(tokenizer_lib.get_tokenizer("char"), ["[NN]", "[VB]"])
  (tmp_path / "notes").mkdir()
  hf_export.write_tokenizer(notes, tmp_path / "notes", 16)
  tok = tokenizers.Tokenizer.from_file(str(tmp_path / "notes" / "tokenizer.json"))
  noted = "dog [NN] runs [VB]"
  assert tok.encode(noted).ids == notes.encode(noted) and notes.encode(noted)[4] == 257
  assert tok.decode(notes.encode(noted)) == noted


# --- export never overwrites, mixes or writes through what is at the destination -----------


def _tiny():
  return gpt.GPT(gpt.GPTConfig(**TINY), rngs=nnx.Rngs(3)), tokenizer_lib.get_tokenizer("char")


def _tree(root):
  return {
    str(p.relative_to(root)): (os.readlink(p) if p.is_symlink() else p.read_bytes())
    for p in sorted(root.rglob("*"))
    if p.is_symlink() or p.is_file()
  }


def test_export_refuses_a_directory_holding_user_files(tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "config.json").write_text("my own config")
  with pytest.raises(
    errors.ConfigError, match=r"'.*out' is not empty \(config\.json\).*--overwrite"
  ):
    hf_export.export(*_tiny(), out)
  (out / "notes.txt").write_text("mine")
  with pytest.raises(
    errors.ConfigError, match=r"holds files an export does not write \(notes\.txt\)"
  ):
    hf_export.export(*_tiny(), out, overwrite=True)
  assert _tree(out) == {"config.json": b"my own config", "notes.txt": b"mine"}
  assert sorted(os.listdir(tmp_path)) == ["out"]  # No temporary directory left.


def test_overwrite_replaces_a_previous_export_whole(tmp_path):
  out = hf_export.export(*_tiny(), tmp_path / "out")
  (out / "config.json").write_text("stale")
  model = gpt.GPT(gpt.GPTConfig(**TINY), rngs=nnx.Rngs(4))
  hf_export.export(model, tokenizer_lib.get_tokenizer("char"), out, overwrite=True)
  assert json.loads((out / "config.json").read_text())["model_type"] == "gpt2"
  back, _ = from_hf(out)
  np.testing.assert_array_equal(back.wpe[...], model.wpe[...])
  assert sorted(os.listdir(tmp_path)) == ["out"]


def test_export_into_a_snapshot_of_symlinks_never_touches_the_blobs(tmp_path):
  """A Hugging Face cache snapshot: its files are symlinks to blobs shared by snapshots."""
  blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "abc"
  blobs.mkdir()
  snapshot.mkdir(parents=True)
  for name in ("config.json", "model.safetensors", "tokenizer.json"):
    (blobs / name).write_bytes(f"blob of {name}".encode())
    (snapshot / name).symlink_to(blobs / name)
  before = _tree(blobs)
  with pytest.raises(errors.ConfigError, match="is not empty"):
    hf_export.export(*_tiny(), snapshot)
  hf_export.export(*_tiny(), snapshot, overwrite=True)
  assert _tree(blobs) == before
  assert not any(p.is_symlink() for p in snapshot.iterdir())
  assert json.loads((snapshot / "config.json").read_text())["n_embd"] == 16
  link = tmp_path / "link"
  link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
  with pytest.raises(errors.ConfigError, match=r"is a symlink.*never writes through symlinks"):
    hf_export.export(*_tiny(), link)
  assert not (tmp_path / "elsewhere").exists()


def test_a_crash_mid_export_leaves_the_previous_export(tmp_path, monkeypatch):
  out = hf_export.export(*_tiny(), tmp_path / "out")
  before = _tree(out)

  def crash(*args):
    raise RuntimeError("killed while writing the tokenizer")

  monkeypatch.setattr(hf_export, "write_tokenizer", crash)
  with pytest.raises(RuntimeError, match="killed"):
    hf_export.export(
      gpt.GPT(gpt.GPTConfig(**TINY), rngs=nnx.Rngs(5)), _tiny()[1], out, overwrite=True
    )
  assert _tree(out) == before
  assert sorted(os.listdir(tmp_path)) == ["out"]


def test_export_onto_a_file_is_one_line_from_the_cli(tmp_path):
  target = tmp_path / "model.bin"
  target.write_bytes(b"not a directory")
  with pytest.raises(errors.ConfigError, match=r"is a file, not a directory"):
    hf_export.export(*_tiny(), target)
  proc = subprocess.run(
    [sys.executable, "-m", "llmjax.export", f"--workdir={tmp_path / 'run'}", f"--out={target}"],
    capture_output=True,
    text=True,
    timeout=120,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )
  assert proc.returncode == 1
  assert proc.stderr.strip() == (
    f"Error: export destination {str(target)!r} is a file, not a directory; give a new or "
    "empty directory"
  )
  assert target.read_bytes() == b"not a directory"
