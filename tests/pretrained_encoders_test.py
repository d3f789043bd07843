"""Parity of imported encoders with Hugging Face transformers (goldens from make_goldens.py)."""

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
from flax import nnx

from llmjax.models import encoder, relative_positions
from llmjax.pretrained import from_hf, hf_import, load_tokenizer

GOLDENS = pathlib.Path(__file__).parent / "goldens"
FAMILY_DIRS = (
  "bert",
  "distilbert",
  "roberta",
  "electra",
  "albert",
  "deberta_v3",
  "deberta_v2",
  "deberta",
)


@functools.partial(nnx.jit, static_argnames=("output_hidden_states",))
def _forward(model, ids, mask, token_types=None, rngs=None, output_hidden_states=False):
  return model(ids, mask, token_types, rngs=rngs, output_hidden_states=output_hidden_states)


def _run(model, golden, **kwargs):
  token_types = golden["token_type_ids"] if "token_type_ids" in golden else None
  return _forward(model, golden["input_ids"], golden["attention_mask"], token_types, **kwargs)


@pytest.mark.parametrize("name", FAMILY_DIRS)
def test_hidden_states_match_transformers(name):
  model, cfg = from_hf(GOLDENS / name)
  golden = np.load(GOLDENS / name / "golden.npz")
  last, hidden = _run(model, golden, output_hidden_states=True)
  want = golden["hidden_states"]
  assert len(hidden) == len(want)
  np.testing.assert_allclose(np.asarray(last), want[-1], atol=1e-4, rtol=0)
  for i, (got, ref) in enumerate(zip(hidden, want)):
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-4, rtol=0, err_msg=f"state {i}")
  assert cfg.hidden_size == want.shape[-1]

  # Whatever the padded positions hold, real tokens' states stay the same.
  mask = golden["attention_mask"]
  junk = np.random.default_rng(0).integers(cfg.pad_token_id + 1, cfg.vocab_size, mask.shape)
  ids = np.where(mask == 1, golden["input_ids"], junk)
  token_types = golden["token_type_ids"] if "token_type_ids" in golden else None
  noisy, _ = _forward(model, ids, mask, token_types, output_hidden_states=True)
  real = mask.astype(bool)
  np.testing.assert_allclose(np.asarray(noisy)[real], np.asarray(last)[real], atol=1e-5)


def test_expected_config_features():
  """The goldens exercise the odd shapes they claim to."""
  cfgs = {name: from_hf(GOLDENS / name)[1] for name in FAMILY_DIRS}
  assert cfgs["bert"].qk_dim == 9 and cfgs["distilbert"].qk_dim == 6
  assert cfgs["electra"].embed_dim == 20 != cfgs["electra"].hidden_size
  assert cfgs["albert"].layer_schedule() == [0, 1, 0, 1, 2, 3]
  v3 = cfgs["deberta_v3"]
  assert (v3.position_buckets, v3.share_att_key, v3.norm_rel_embeddings) == (8, True, True)
  assert not v3.absolute_positions and v3.type_vocab_size == 0 and v3.embed_dim == 28
  v2 = cfgs["deberta_v2"]
  assert (v2.rel_span, v2.conv_kernel_size, v2.conv_groups) == (6, 3, 2)
  assert set(v2.pos_att_type) == {"c2p", "p2c"} and not v2.share_att_key
  assert cfgs["roberta"].pad_token_id == 1
  v1 = cfgs["deberta"]
  assert (v1.family, v1.num_heads, v1.qk_dim, v1.vocab_size, v1.embed_dim) == (
    "deberta",
    3,
    11,
    97,
    26,
  )
  assert v1.rel_span == 10 and not v1.absolute_positions and v1.position_buckets <= 0


def test_deberta_v1_within_and_beyond_its_relative_span():
  """The 17 tokens of the main batch (checked above) reach past the relative span of 10
  (distances clipped); the short batch of 7 stays inside it (the reference then slices
  its table to the sequence length instead)."""
  model, _ = from_hf(GOLDENS / "deberta")
  golden = np.load(GOLDENS / "deberta" / "golden.npz")
  assert golden["input_ids"].shape == (3, 17) and golden["short_input_ids"].shape == (2, 7)
  _, hidden = _forward(
    model, golden["short_input_ids"], golden["short_attention_mask"], output_hidden_states=True
  )
  real = golden["short_attention_mask"].astype(bool)
  for i, (got, ref) in enumerate(zip(hidden, golden["short_hidden_states"])):
    np.testing.assert_allclose(
      np.asarray(got)[real], ref[real], atol=1e-4, rtol=0, err_msg=f"state {i}"
    )
  attn = model.layers[0].attn
  assert attn.key.bias is None and attn.pos_key.bias is None and attn.query.bias is not None


def test_deberta_v1_fused_attention_is_split_per_head():
  d, k, heads = 2, 3, 2
  fused = np.arange(3 * heads * k * d, dtype=np.float32).reshape(3 * heads * k, d)
  stem = "deberta.encoder.layer.0.attention.self."
  out = hf_import.split_deberta_in_proj(
    {stem + "in_proj.weight": fused, stem + "q_bias": np.ones(6), stem + "v_bias": np.zeros(6)},
    num_heads=heads,
  )
  # Rows per head: 3 query, 3 key, 3 value.
  np.testing.assert_array_equal(out[stem + "key_proj.weight"], fused[[3, 4, 5, 12, 13, 14]])
  np.testing.assert_array_equal(out[stem + "query_proj.bias"], np.ones(6))
  assert sorted(out) == sorted(
    stem + n
    for n in (
      "query_proj.weight",
      "query_proj.bias",
      "key_proj.weight",
      "value_proj.weight",
      "value_proj.bias",
    )
  )
  with pytest.raises(
    ValueError,
    match=r"has 18 rows, not a multiple of 3 x "
    r"num_attention_heads=4",
  ):
    hf_import.split_deberta_in_proj({stem + "in_proj.weight": fused}, num_heads=4)


def test_roberta_positions_skip_padding():
  model, _ = from_hf(GOLDENS / "roberta")
  ids = jnp.array([[5, 6, 7, 1, 1], [1, 5, 6, 1, 7]])
  np.testing.assert_array_equal(model.embed.position_ids(ids), [[2, 3, 4, 1, 1], [1, 2, 3, 1, 4]])


def test_deberta_log_buckets_match_reference():
  tables = np.load(GOLDENS / "deberta_buckets.npz")
  rel = tables["relative"].astype(np.int64)
  for key in ("b256_m512", "b8_m24", "b64_m1024"):
    bucket, max_position = (int(x[1:]) for x in key.split("_"))
    np.testing.assert_array_equal(
      relative_positions.log_bucket_positions(rel, bucket, max_position), tables[key], err_msg=key
    )


def test_jit_and_bfloat16():
  model, _ = from_hf(GOLDENS / "deberta_v3", dtype=jnp.bfloat16)
  golden = np.load(GOLDENS / "deberta_v3" / "golden.npz")
  out = _forward(model, golden["input_ids"], golden["attention_mask"])
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), golden["hidden_states"][-1], atol=0.15)
  assert model.layers[0].attn.query.kernel[...].dtype == jnp.float32


def test_dropout_only_with_rngs():
  """The golden configs say dropout 0.1: parity above runs without rngs, hence without it."""
  model, cfg = from_hf(GOLDENS / "bert")
  assert cfg.hidden_dropout == cfg.attention_dropout == 0.1
  golden = np.load(GOLDENS / "bert" / "golden.npz")
  a = np.asarray(_run(model, golden, rngs=nnx.Rngs(dropout=0)))
  b = np.asarray(_run(model, golden, rngs=nnx.Rngs(dropout=1)))
  assert not np.allclose(a, b)
  assert not np.allclose(a, golden["hidden_states"][-1], atol=1e-2)


def test_gradients_flow_to_every_parameter():
  model, _ = from_hf(GOLDENS / "deberta_v2")
  golden = np.load(GOLDENS / "deberta_v2" / "golden.npz")

  def loss(m):
    return jnp.mean(m(golden["input_ids"], golden["attention_mask"], golden["token_type_ids"]) ** 2)

  grads = nnx.jit(nnx.grad(loss))(model)
  for path, g in nnx.to_flat_state(grads):
    assert float(jnp.abs(g.get_value()).sum()) > 0, path


def test_sequence_longer_than_positions_is_refused():
  model, cfg = from_hf(GOLDENS / "bert")
  ids = jnp.ones((1, cfg.max_position_embeddings + 1), jnp.int32)
  with pytest.raises(ValueError, match="exceeds max_position_embeddings=24"):
    model(ids)


def _copy_checkpoint(src, dst, config_edit=None):
  dst.mkdir()
  config = json.loads((src / "config.json").read_text())
  if config_edit:
    config_edit(config)
  (dst / "config.json").write_text(json.dumps(config))
  for f in src.iterdir():
    if f.name not in ("config.json", "golden.npz"):
      (dst / f.name).symlink_to(f)
  return dst


def test_unknown_model_type_lists_supported(tmp_path):
  d = _copy_checkpoint(GOLDENS / "bert", tmp_path / "m", lambda c: c.update(model_type="mystery"))
  with pytest.raises(ValueError, match=r"unsupported model_type 'mystery'.*'albert', 'bert'"):
    from_hf(d)


def test_missing_files_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    from_hf(tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="has no config.json"):
    from_hf(tmp_path / "empty")
  d = tmp_path / "no_weights"
  d.mkdir()
  (d / "config.json").write_text((GOLDENS / "bert" / "config.json").read_text())
  with pytest.raises(FileNotFoundError, match="expected model.safetensors"):
    from_hf(d)


def test_shape_mismatch_names_the_tensor(tmp_path):
  d = _copy_checkpoint(
    GOLDENS / "electra", tmp_path / "m", lambda c: c.update(intermediate_size=50)
  )
  with pytest.raises(
    ValueError,
    match=r"'encoder\.layer\.0\.intermediate\.dense\.bias'.*"
    r"has shape \(48,\), but config.json implies \(50,\)",
  ):
    from_hf(d)


def test_transposed_kernel_is_refused(tmp_path):
  from safetensors.numpy import load_file, save_file  # pylint: disable=import-outside-toplevel

  d = tmp_path / "m"
  d.mkdir()
  (d / "config.json").write_text((GOLDENS / "electra" / "config.json").read_text())
  tensors = load_file(GOLDENS / "electra" / "model.safetensors")
  name = "encoder.layer.1.intermediate.dense.weight"
  tensors[name] = np.ascontiguousarray(tensors[name].T)
  save_file(tensors, d / "model.safetensors")
  with pytest.raises(
    ValueError,
    match=rf"'{name}'.*has shape \(36, 48\), but config.json"
    r" implies \(48, 36\)",
  ):
    from_hf(d)


def test_missing_tensor_is_named(tmp_path):
  d = _copy_checkpoint(GOLDENS / "bert", tmp_path / "m", lambda c: c.update(num_hidden_layers=3))
  with pytest.raises(KeyError, match=r"lacks tensor 'encoder\.layer\.2\.attention\.self"):
    from_hf(d)


def test_bad_overrides_and_position_types():
  config = json.loads((GOLDENS / "bert" / "config.json").read_text())
  with pytest.raises(TypeError, match="unknown EncoderConfig override.*'hiden_size'"):
    hf_import.encoder_config_from_hf(config, hiden_size=3)
  with pytest.raises(ValueError, match="position_embedding_type='relative_key'"):
    hf_import.encoder_config_from_hf({**config, "position_embedding_type": "relative_key"})


def test_legacy_names_and_prefix_are_normalised():
  """The bert golden is stored as `bert.*` with LayerNorm gamma/beta and an MLM bias."""
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel

  names = load_file(GOLDENS / "bert" / "model.safetensors")
  assert "bert.embeddings.LayerNorm.gamma" in names and "cls.predictions.bias" in names
  model, _ = from_hf(GOLDENS / "bert")
  np.testing.assert_array_equal(
    model.embed.norm.scale[...], names["bert.embeddings.LayerNorm.gamma"]
  )
  np.testing.assert_array_equal(
    model.layers[1].attn.query.kernel[...],
    names["bert.encoder.layer.1.attention.self.query.weight"].T,
  )


def test_abstract_init_is_replaced_everywhere():
  model, _ = from_hf(GOLDENS / "albert")
  for path, var in nnx.to_flat_state(nnx.state(model)):
    assert isinstance(var.get_value(), jax.Array), path


def test_hub_ids_go_through_snapshot_download(tmp_path, monkeypatch):
  """A repo without safetensors is fetched in two steps: config first, then the .bin."""
  import huggingface_hub  # pylint: disable=import-outside-toplevel

  config_only = tmp_path / "config_only"
  config_only.mkdir()
  (config_only / "config.json").write_text((GOLDENS / "distilbert" / "config.json").read_text())
  calls = []

  def fake_download(repo_id, allow_patterns=None):
    calls.append((repo_id, allow_patterns))
    return str(config_only if len(calls) == 1 else GOLDENS / "distilbert")

  monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
  model, cfg = from_hf("someone/tiny-distilbert")
  assert cfg.family == "distilbert" and isinstance(model, encoder.Encoder)
  assert [c[0] for c in calls] == ["someone/tiny-distilbert"] * 2
  assert "model.safetensors" in calls[0][1] and "pytorch_model.bin" not in calls[0][1]
  assert "pytorch_model.bin" in calls[1][1]


def test_unreachable_hub_gives_a_clear_error(monkeypatch):
  import huggingface_hub  # pylint: disable=import-outside-toplevel

  def offline(repo_id, allow_patterns=None):
    raise OSError("no network")

  monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
  with pytest.raises(
    FileNotFoundError,
    match=r"'bert-base-uncased' is neither a local directory"
    r" nor a downloadable hub repository \(no network\)",
  ):
    from_hf("bert-base-uncased")


def test_deberta_v1_bpe_tokenizer_uses_cls_and_sep(tmp_path):
  """microsoft/deberta-base ships GPT-2 BPE files whose specials are [CLS] / [SEP]."""
  trainer = tokenizers.ByteLevelBPETokenizer()
  trainer.train_from_iterator(
    ["hello world, hello there"] * 20,
    vocab_size=300,
    special_tokens=["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"],
  )
  trainer.save_model(str(tmp_path))
  tok = load_tokenizer(tmp_path)
  enc = tok.encode("hello world", "there")
  assert enc.tokens[0] == "[CLS]" and enc.tokens.count("[SEP]") == 2
  assert enc.tokens[-1] == "[SEP]" and "<s>" not in enc.tokens
  first = enc.tokens.index("[SEP]") + 1
  assert enc.type_ids == [0] * first + [1] * (len(enc.ids) - first)
  assert tok.token_to_id("[PAD]") == 0
