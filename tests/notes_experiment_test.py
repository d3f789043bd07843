"""Tests for notes runs in the trainer and the two notes experiments."""

import dataclasses
import json
import math
import pathlib

import numpy as np
import pytest

from llmjax import data as data_lib
from llmjax.config import load as config_load
from llmjax.config import validate as config_validate
from llmjax.data import notes
from llmjax.data import tokenizer as tokenizer_lib
from llmjax.experiments import notes_report
from llmjax.experiments import notes_study as exp_notes
from llmjax.util import assets, errors

PARAGRAPH = (
  "The old man walked slowly to the river. He saw a small boat and two "
  "children who were laughing loudly.\nShe quickly wrote a long letter to "
  "her brother, because the winter was coming.\n\n"
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setattr(assets, "cache_dir", lambda: tmp_path / "cache")
  return tmp_path / "cache"


@pytest.fixture
def text_file(tmp_path):
  path = tmp_path / "text.txt"
  path.write_text(PARAGRAPH * 40)
  return path


def load(spec, **overrides):
  config = config_load.load_config(spec).unlock()
  config_load.apply_overrides(config, overrides)
  return config


# ---------------------------------------------------------------- metrics


def test_fair_metrics_hand_made_case():
  base = 100
  # Three words (ids < 100) and two notes; 4 bytes of text, 2 words.
  ids = np.array([101, 5, 6, 102, 7])
  nll = np.array([math.log(2), math.log(4), math.log(2), math.log(8), math.log(2)])
  top = np.array([101, 5, 9, 100, 7])
  m = exp_notes.fair_metrics(
    ids, nll, top, base_vocab_size=base, n_bytes=4, n_words=2, block_size=10, variant="pre"
  )
  assert m["bits_per_byte"] == pytest.approx((1 + 2 + 1 + 3 + 1) / 4)
  assert m["word_bits_per_byte"] == pytest.approx((2 + 1 + 1) / 4)
  assert m["note_bits_per_word"] == pytest.approx((1 + 3) / 2)
  assert m["word_ppl_given_notes"] == pytest.approx(2 ** (4 / 3))
  assert m["note_accuracy"] == 0.5
  assert m["words_per_window"] == pytest.approx(10 * 2 / 5)
  assert m["tokens_per_word"] == 2.5
  assert (m["n_tokens"], m["n_notes"]) == (5, 2)
  none = exp_notes.fair_metrics(
    ids[[1, 2, 4]],
    nll[[1, 2, 4]],
    top[[1, 2, 4]],
    base_vocab_size=base,
    n_bytes=4,
    n_words=2,
    block_size=10,
    variant="none",
  )
  assert none["note_accuracy"] is None and none["note_bits_per_word"] == 0.0
  assert none["bits_per_byte"] == none["word_bits_per_byte"] == pytest.approx(1.0)
  with pytest.raises(ValueError, match="n_bytes=0"):
    exp_notes.fair_metrics(
      ids, nll, top, base_vocab_size=base, n_bytes=0, n_words=2, block_size=10, variant="pre"
    )


def test_score_tokens_scores_every_token_once_in_order():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top

  @dataclasses.dataclass(frozen=True)
  class Cfg:
    block_size: int = 4

  class Successor(nnx.Module):
    """Puts logit 20 on (input + 1) mod 10, 0 elsewhere."""

    def __init__(self):
      self.cfg = Cfg()
      self.scale = nnx.Param(jnp.array(20.0))

    def __call__(self, tokens_BxT):
      return self.scale[...] * jax_one_hot((tokens_BxT + 1) % 10, 10)

  def jax_one_hot(x, n):
    return (x[..., None] == jnp.arange(n)).astype(jnp.float32)

  ids = np.arange(23) % 10
  ids[7] = 5  # Wrong at 7 (expects 7) and at 8 (after 5 it expects 6).
  nll, top = exp_notes.score_tokens(Successor(), ids, eot_id=9, batch_size=2)
  assert nll.shape == top.shape == (23,)
  expected_top = (np.concatenate([[9], ids[:-1]]) + 1) % 10
  np.testing.assert_array_equal(top, expected_top)
  right = math.log(1 + 9 * math.exp(-20))
  expected = np.where(top == ids, right, 20 + right)
  np.testing.assert_allclose(nll, expected, rtol=1e-5, atol=1e-6)
  assert sorted(np.flatnonzero(top != ids)) == [7, 8]


def test_budget_steps():
  manifest = {"splits": {"train": {"n_tokens": 3000, "n_words": 1000}}}
  assert exp_notes.budget_steps("words", 2000, manifest, 100) == 60
  assert exp_notes.budget_steps("tokens", 2000, manifest, 100) == 20
  assert exp_notes.budget_steps("words", 1, manifest, 100) == 1
  with pytest.raises(ValueError, match="budget_unit='bytes'"):
    exp_notes.budget_steps("bytes", 10, manifest, 100)


def test_aggregate_and_verdict():
  rows = [
    {"label": "pre", "bits_per_byte": 1.0, "note_accuracy": None, "curve": []},
    {"label": "pre", "bits_per_byte": 1.2, "note_accuracy": None, "curve": []},
    {"label": "none", "bits_per_byte": 2.0, "note_accuracy": None, "curve": []},
  ]
  agg = notes_report.aggregate(rows, ["pre", "none"])
  mean, std, n = agg["pre"]["bits_per_byte"]
  assert (mean, n) == (pytest.approx(1.1), 2) and std == pytest.approx(0.1414214, rel=1e-6)
  assert agg["none"]["bits_per_byte"] == (2.0, None, 1)
  assert agg["pre"]["note_accuracy"] == (None, None, 0)
  assert "no verdict" in notes_report.verdict(
    agg["pre"]["bits_per_byte"], agg["none"]["bits_per_byte"], "pre", "none"
  )
  assert notes_report.fmt((0.5, 0.25, 2), "{:.1%}") == "50.0% ± 25.0%"


def test_verdict_two_sigma_rule_on_synthetic_results():
  def seeds(*values):
    rows = [{"label": "x", "bits_per_byte": v} for v in values]
    return notes_report.aggregate(rows, ["x"])["x"]["bits_per_byte"]

  a = seeds(1.00, 1.02, 1.04)  # mean 1.02, sd 0.02
  outside = seeds(1.06, 1.08, 1.10)  # difference 0.06 > 2 * sqrt(2) * 0.02 = 0.0566
  assert notes_report.verdict_kind(a, outside) == notes_report.FINDING
  closer = seeds(1.05, 1.07, 1.09)  # difference 0.05 < 0.0566
  assert notes_report.verdict_kind(a, closer) == notes_report.NO_DIFFERENCE
  assert notes_report.verdict_kind(closer, a) == notes_report.NO_DIFFERENCE
  text = notes_report.verdict(a, closer, "post", "pre")
  assert text.endswith("no difference.") and "finding" not in text
  text = notes_report.verdict(outside, a, "post", "pre")
  assert text.endswith("finding, pre lower.")
  assert notes_report.verdict_kind((1.0, None, 1), (2.0, 0.1, 3)) == notes_report.ONE_SEED


# ---------------------------------------------------------------- trainer wiring


def test_notes_tokenizer_round_trip():
  base = tokenizer_lib.get_tokenizer("char")
  tok = notes.NotesTokenizer(base, ["[NN]", "[.]", "[NNS]"])
  assert tok.vocab_size == 260 and tok.eot_id == 256
  ids = tok.encode("[NNS]cats[.].")
  assert ids == [259] + list(b"cats") + [258] + list(b".")
  assert tok.decode(ids) == "[NNS]cats[.]."
  assert tok.decode([260]) == "[?260]"


def test_data_splits_checks_vocab_and_records_notes(cache, text_file, tmp_path):
  config = load(
    "configs/post_notes.py:smoke", **{"data.source": "file", "data.path": str(text_file)}
  )
  config.model.vocab_size = 300
  with pytest.raises(errors.ConfigError, match="model.vocab_size=307"):
    data_lib.data_splits(config)
  config.model.vocab_size = 307
  splits, tok = data_lib.data_splits(config, tmp_path)
  assert splits.manifest["vocab_size"] == 307 and tok.vocab_size == 307
  recorded = json.loads((tmp_path / "notes.json").read_text())
  assert recorded["variant"] == "post" and len(recorded["note_vocab"]) == 50
  again = data_lib.run_tokenizer(config, tmp_path)
  ids = np.asarray(splits.train[:40])
  assert again.decode(ids) == tok.decode(ids)
  assert "[DT]" in tok.decode(ids) and tok.decode(ids).startswith("The[DT] old[JJ]")
  plain = config.copy_and_resolve_references()
  plain.notes.variant = ""
  assert data_lib.run_tokenizer(plain).name == "char"


def test_limit_chars_cuts_at_a_line_end(cache, text_file):
  config = load(
    "configs/no_notes.py:smoke",
    **{"data.source": "file", "data.path": str(text_file), "notes.limit_chars": 500},
  )
  splits, tok = data_lib.data_splits(config)
  text = tok.decode(np.concatenate([splits.train, splits.val]))
  assert text == (PARAGRAPH * 3)[: text.rfind("\n") + 1] and 250 <= len(text) <= 500


def test_streamed_corpus_from_local_jsonl(cache, tmp_path):
  docs = [f"Document {i} says that the cat sat on the mat." for i in range(60)]
  path = tmp_path / "docs.jsonl"
  path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
  config = load(
    "configs/pre_notes.py:smoke",
    **{
      "data.source": "hf",
      "data.path": str(path),
      "data.hf_streaming": True,
      "data.val_fraction": 0.1,
      "notes.limit_chars": 1500,
    },
  )
  splits, tok = data_lib.data_splits(config)
  m = splits.manifest
  base = m["notes"]["base_vocab_size"]
  val = tok.base.decode(notes.strip_notes(splits.val, base))
  train = tok.base.decode(notes.strip_notes(splits.train, base))
  assert val == "\n\n".join(docs[:4])  # The first ~150 characters' documents.
  assert (val + "\n\n" + train).startswith("\n\n".join(docs[:30]))
  assert len(val) + len(train) <= 1500 + 2 * 40
  assert m["splits"]["val"]["n_bytes"] == len(val)
  assert (
    m["notes"]["counts"]["words"] == m["splits"]["val"]["n_words"] + m["splits"]["train"]["n_words"]
  )
  assert (np.asarray(splits.val) >= base).sum() == m["splits"]["val"]["n_words"]
  config.notes.limit_chars = 0
  with pytest.raises(ValueError, match="needs notes.limit_chars > 0"):
    data_lib.data_splits(config)


def test_heldout_is_the_same_text_for_every_variant(cache, text_file):
  out = {}
  for variant in ("pre", "none"):
    config = load(
      f"configs/{'no' if variant == 'none' else variant}_notes.py:smoke",
      **{"data.source": "file", "data.path": str(text_file)},
    )
    splits, _ = data_lib.data_splits(config)
    out[variant] = exp_notes.heldout(splits.dir, eval_words=25)
  (pre_ids, pre_words, pre_bytes), (none_ids, none_words, none_bytes) = out["pre"], out["none"]
  assert pre_words == none_words == 25 and pre_bytes == none_bytes
  assert len(pre_ids) == len(none_ids) + 25
  np.testing.assert_array_equal(notes.strip_notes(pre_ids, 257), none_ids)


def test_notes_configs_share_one_base():
  for size in (None, "large", "cpu", "cpu_bpe", "smoke"):
    configs = {
      v: load(f"configs/{v}_notes.py" + (f":{size}" if size else ""))
      for v in ("pre", "post", "blank", "no")
    }
    flat = {v: config_load.flatten(c) for v, c in configs.items()}
    for v, c in configs.items():
      config_validate.validate(c)
      diff = {k for k in flat[v] if flat[v][k] != flat["pre"][k]}
      assert diff <= {"name", "notes.variant"}, (v, size, diff)
  assert configs["no"].notes.variant == "none"
  for spec in ("notes_experiment.py:cpu", "notes_experiment.py:cpu_bpe", "notes_richness.py:cpu"):
    config = load(f"configs/{spec}")
    config_validate.validate(config)
    assert tuple(config.experiment.seeds) == (0, 1, 2), spec
  assert load("configs/notes_experiment.py:cpu_bpe").data.tokenizer == "gpt2"
  with pytest.raises(ValueError, match="Unknown variant 'gpu'"):
    load("configs/pre_notes.py:gpu")


def test_default_notes_model_is_about_100m_parameters():
  from flax import nnx  # pylint: disable=g-import-not-at-top

  from llmjax import models  # pylint: disable=g-import-not-at-top

  config = load("configs/pre_notes.py")
  abstract = nnx.eval_shape(lambda: models.build(config.model, 0))
  n = sum(int(np.prod(x.shape)) for x in __import__("jax").tree.leaves(nnx.state(abstract)))
  assert 90e6 < n < 110e6, n


def test_experiment_user_errors_are_one_line(cache, text_file, tmp_path):
  from llmjax import jobs  # pylint: disable=g-import-not-at-top

  config = load(
    "configs/notes_experiment.py:smoke",
    **{
      "data.source": "file",
      "data.path": str(text_file),
      "notes.spacy_model": "xx_no_such_pipeline",
    },
  )
  with pytest.raises(errors.LlmjaxError, match="pip install xx-no-such-pipeline"):
    jobs.run(config, str(tmp_path / "a"))
  config = load("configs/notes_experiment.py:smoke", **{"experiment.budget_unit": "bytes"})
  with pytest.raises(errors.LlmjaxError, match="budget_unit='bytes': use 'words' or 'tokens'"):
    jobs.run(config, str(tmp_path / "b"))
  config = load("configs/notes_richness.py:smoke", **{"experiment.levels": ("tag", "pos")})
  with pytest.raises(errors.LlmjaxError, match=r"experiment.levels has \['pos'\]"):
    jobs.run(config, str(tmp_path / "c"))
  config = load("configs/notes_experiment.py:smoke", **{"data.val_fraction": 0.0})
  with pytest.raises(errors.ConfigError, match=r"data.val_fraction=0 leaves no held-out text"):
    jobs.run(config, str(tmp_path / "d"))


# ---------------------------------------------------------------- experiments end to end


@pytest.mark.slow
def test_notes_experiment_smoke_end_to_end(cache, text_file, tmp_path):
  from llmjax import jobs  # pylint: disable=g-import-not-at-top

  config = load(
    "configs/notes_experiment.py:smoke", **{"data.source": "file", "data.path": str(text_file)}
  )
  results = jobs.run(config, str(tmp_path / "exp"))
  runs = {r["label"]: r for r in results["runs"]}
  assert list(runs) == ["pre", "post", "blank", "none"]
  assert len({(r["eval_bytes"], r["eval_words"], r["num_params"]) for r in runs.values()}) == 1
  for v, r in runs.items():
    assert math.isfinite(r["bits_per_byte"]) and r["bits_per_byte"] > 0
    assert (r["note_accuracy"] is not None) == (v in ("pre", "post"))
    assert abs(r["words_seen"] - 600) <= 0.5 * 8 * 64 / r["tokens_per_word"] + 1
  assert runs["none"]["words_per_window"] > runs["pre"]["words_per_window"]
  assert runs["pre"]["steps"] > runs["none"]["steps"]
  report = (tmp_path / "exp" / "report.md").read_text()
  for needle in (
    "| pre |",
    "| none |",
    "word-token ppl given gold notes",
    "(post vs pre)",
    "(post vs none)",
    "Notes help",
    "Blank notes alone help",
    "upper bound",
  ):
    assert needle in report
  for png in ("curves.png", "metrics.png"):
    assert (tmp_path / "exp" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  from llmjax import api  # pylint: disable=g-import-not-at-top

  sampler = api.Sampler(tmp_path / "exp" / "pre-seed0")
  ids = sampler.generate_tokens([], 30, temperature=1.0)[0]
  text = sampler.tokenizer.decode(ids)
  notes_in_ids = sum(i >= 257 for i in ids)
  assert text.count("[") >= notes_in_ids  # Notes decode as [TAG] strings.


@pytest.mark.slow
def test_notes_richness_smoke_end_to_end(tmp_path, cache):
  from llmjax import jobs  # pylint: disable=g-import-not-at-top

  config = load("configs/notes_richness.py:smoke")
  results = jobs.run(config, str(tmp_path / "rich"))
  rows = {r["label"]: r for r in results["runs"]}
  assert list(rows) == ["blank", "upos", "tag", "tag+morph", "tag+morph+dep"]
  entropy = [rows[level]["note_entropy"] for level in rows]
  assert entropy[0] == 0.0 and entropy[1] > 1.0
  assert entropy[1] <= entropy[3] <= entropy[4]  # Richer notes carry more bits.
  assert len({r["num_params"] for r in rows.values()}) == 1
  assert rows["tag+morph+dep"]["note_vocab"] > rows["upos"]["note_vocab"]
  assert (tmp_path / "rich" / "richness.png").is_file()
  assert "| tag+morph |" in (tmp_path / "rich" / "report.md").read_text()


@pytest.mark.slow
def test_interrupted_experiment_resumes_only_what_is_missing(
  cache, text_file, tmp_path, monkeypatch
):
  from llmjax import jobs  # pylint: disable=g-import-not-at-top
  from llmjax.train import lm  # pylint: disable=g-import-not-at-top

  config = load(
    "configs/notes_experiment.py:smoke",
    **{
      "data.source": "file",
      "data.path": str(text_file),
      "experiment.variants": ("none",),
      "experiment.seeds": (0, 1),
    },
  )
  real_train = lm.train
  trained, stop_run = [], []

  def train(run_cfg, run_dir, **kw):
    trained.append(pathlib.Path(run_dir).name)
    if trained[-1] in stop_run:
      kw["stop_at_step"] = 2  # As if interrupted there: the checkpoint of step 2 is saved.
    return real_train(run_cfg, run_dir, **kw)

  monkeypatch.setattr(lm, "train", train)
  stop_run.append("none-seed1")
  with pytest.raises(errors.TrainingError, match="none-seed1 was interrupted at step 2"):
    jobs.run(config, str(tmp_path / "resumed"))
  assert trained == ["none-seed0", "none-seed1"]
  assert not (tmp_path / "resumed" / "report.md").exists()
  stop_run[:], trained[:] = [], []
  resumed = jobs.run(config, str(tmp_path / "resumed"))
  assert trained == ["none-seed1"]  # none-seed0 finished earlier: reused, not trained.
  summary = json.loads((tmp_path / "resumed" / "none-seed1" / "summary.json").read_text())
  assert summary["resumed_from"] == 2 and summary["status"] == "finished"
  trained[:] = []
  whole = jobs.run(config, str(tmp_path / "whole"))
  assert trained == ["none-seed0", "none-seed1"]
  untimed = lambda runs: [
    {k: v for k, v in r.items() if k not in ("train_s", "score_s")} for r in runs
  ]
  assert untimed(resumed["runs"]) == untimed(whole["runs"])
  assert all(r["train_s"] > 0 and r["score_s"] > 0 for r in resumed["runs"] + whole["runs"])
  report = lambda d: [
    line
    for line in (tmp_path / d / "report.md").read_text().splitlines()
    if not line.startswith("- compute:")
  ]
  assert report("resumed") == report("whole")
  assert "of training (evaluations included)" in (tmp_path / "whole" / "report.md").read_text()
