"""GPT-2 import: parity with HF GPT2LMHeadModel logits (golden from make_goldens.py)."""

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors import numpy as safetensors_numpy

from llmjax.models import gpt
from llmjax.pretrained import from_hf, init_from, weights
from llmjax.pretrained import gpt2 as gpt2_lib
from llmjax.util import errors

GOLDEN_DIR = pathlib.Path(__file__).parent / "goldens" / "gpt2"


_forward = nnx.jit(lambda m, x: m(x))


@pytest.fixture(scope="module")
def golden():
  return np.load(GOLDEN_DIR / "golden.npz")


@pytest.mark.parametrize("scan_layers", [False, True])
def test_logits_match_transformers(golden, scan_layers):
  model, cfg = from_hf(GOLDEN_DIR, scan_layers=scan_layers)
  assert isinstance(model, gpt.GPT)
  assert (cfg.vocab_size, cfg.padded_vocab_size, cfg.n_embd // cfg.n_head, cfg.mlp_hidden) == (
    257,
    320,
    9,
    52,
  )
  logits = _forward(model, golden["input_ids"])
  np.testing.assert_allclose(np.asarray(logits), golden["logits"], atol=1e-4, rtol=0)
  # The padded embedding rows are zero.
  assert not np.asarray(model.wte[...])[257:].any()


def test_kv_cache_decode_matches_full_forward(golden):
  model, _ = from_hf(GOLDEN_DIR)
  ids = golden["input_ids"][:, :10]
  decode = nnx.jit(lambda m, x, c, pos: m.decode(x, c, pos))
  _, cache = decode(model, ids[:, :6], model.init_cache(ids.shape[0]), 0)
  step_logits, _ = decode(model, ids[:, 6:10], cache, 6)
  np.testing.assert_allclose(np.asarray(step_logits), golden["logits"][:, 6:10], atol=1e-4)


def test_prefixed_layout_and_cropped_block_size(golden):
  tensors = weights.load_tensors(GOLDEN_DIR)
  prefixed = {"transformer." + k: v for k, v in tensors.items() if not k.endswith(".attn.bias")}
  prefixed["lm_head.weight"] = tensors["wte.weight"]
  cfg = gpt2_lib.config_from_hf(json.loads((GOLDEN_DIR / "config.json").read_text()), block_size=16)
  model = gpt2_lib.build(gpt2_lib.params_from_tensors(prefixed, cfg), cfg)
  assert model.wpe[...].shape == (16, 36)
  logits = _forward(model, golden["input_ids"])
  np.testing.assert_allclose(np.asarray(logits), golden["logits"], atol=1e-4)


def test_bf16_compute_stays_close(golden):
  model, cfg = from_hf(GOLDEN_DIR, dtype="bfloat16")
  assert cfg.dtype == jnp.bfloat16 and model.wte[...].dtype == jnp.float32
  logits = np.asarray(_forward(model, golden["input_ids"]))
  agree = (logits.argmax(-1) == golden["logits"].argmax(-1)).mean()
  assert agree > 0.9 and np.abs(logits - golden["logits"]).max() < 0.5


def _copy_with_config(tmp_path, **changes):
  out = tmp_path / "ckpt"
  shutil.copytree(GOLDEN_DIR, out)
  hf = json.loads((out / "config.json").read_text())
  hf.update(changes)
  (out / "config.json").write_text(json.dumps(hf))
  return out


@pytest.mark.parametrize(
  "change, message",
  [
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"reorder_and_upcast_attn": True}, "reorder_and_upcast_attn"),
    ({"activation_function": "relu"}, "activation_function='relu'"),
    ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon"),
  ],
)
def test_unsupported_options_raise(tmp_path, change, message):
  with pytest.raises(ValueError, match=message):
    from_hf(_copy_with_config(tmp_path, **change))


def test_wrong_shapes_and_overrides_raise(tmp_path):
  with pytest.raises(
    ValueError, match="h.0.mlp.c_fc.weight.*has shape \\(36, 52\\).*implies \\(36, 144\\)"
  ):
    from_hf(_copy_with_config(tmp_path, n_inner=None))
  with pytest.raises(ValueError, match="exceeds the checkpoint's n_positions=24"):
    from_hf(GOLDEN_DIR, block_size=32)
  with pytest.raises(ValueError, match="checkpoint fixes n_layer=2"):
    from_hf(GOLDEN_DIR, n_layer=3)
  one_layer = tmp_path / "one"
  one_layer.mkdir()
  hf = json.loads((GOLDEN_DIR / "config.json").read_text())
  (one_layer / "config.json").write_text(json.dumps({**hf, "n_layer": 1}))
  tensors = safetensors_numpy.load_file(GOLDEN_DIR / "model.safetensors")
  safetensors_numpy.save_file(tensors, one_layer / "model.safetensors")
  with pytest.raises(ValueError, match="more layers than config.json's n_layer=1"):
    from_hf(one_layer)


def test_scanned_and_unscanned_params_hold_the_same_values():
  tensors = weights.load_tensors(GOLDEN_DIR)
  hf = json.loads((GOLDEN_DIR / "config.json").read_text())
  flat = gpt2_lib.params_from_tensors(tensors, gpt2_lib.config_from_hf(hf))
  stacked = gpt2_lib.params_from_tensors(tensors, gpt2_lib.config_from_hf(hf, scan_layers=True))
  for i in range(2):
    jax.tree.map(
      lambda a, b, i=i: np.testing.assert_array_equal(a, b[i]), flat["h"][i], stacked["h"]
    )
  np.testing.assert_array_equal(
    flat["h"][1]["attn"]["c_attn"].reshape(36, 108), tensors["h.1.attn.c_attn.weight"]
  )


def test_tokenizer_of_a_checkpoint(tmp_path):
  assert gpt2_lib.tokenizer_name(tmp_path, {"vocab_size": 50257}) == "gpt2"
  assert gpt2_lib.tokenizer_name(tmp_path, {"vocab_size": 257}) == "char"
  with pytest.raises(errors.DataError, match="vocabulary of 300 tokens and no tokenizer.json"):
    gpt2_lib.tokenizer_name(tmp_path, {"vocab_size": 300})
  (tmp_path / "tokenizer.json").write_text("{}")
  assert gpt2_lib.tokenizer_name(tmp_path, {"vocab_size": 300}) == f"bpe:{tmp_path}/tokenizer.json"
  # Named without downloading anything: hub ids by name, local directories by config.json.
  assert init_from.tokenizer_for("gpt2-xl") == "gpt2"
  assert init_from.tokenizer_for(str(GOLDEN_DIR)) == "char"
  assert init_from.tokenizer_for("someone/gpt2-variant") is None
  # A pinned revision names the same checkpoint family.
  assert init_from.tokenizer_for("gpt2-medium@607a30d783dfa663caf39e06633721c8d4cfcd7e") == "gpt2"
  assert init_from.gpt2_hub_name("gpt2-large@main") == "gpt2-large"
  assert init_from.gpt2_hub_name("gpt2-huge@main") is None
  assert init_from.gpt2_hub_name(str(GOLDEN_DIR)) is None


def test_load_pretrained_refuses_other_checkpoints(tmp_path):
  with pytest.raises(errors.AssetError, match="is a 'bert' checkpoint, not GPT-2"):
    init_from.load_pretrained(str(GOLDEN_DIR.parent / "bert"))
  with pytest.raises(errors.AssetError, match="does not exist"):
    init_from.load_pretrained(str(tmp_path / "missing"))
