"""Row 15: spaCy notes lose nothing on text longer than `nlp.max_length` or not in English:
every non-space character lands in exactly one word, and stripping the notes gives back
the text byte for byte."""

import numpy as np
import pytest

notes = pytest.importorskip("llmjax.data.notes")
from llmjax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top

MIXED = (
  "Příliš žluťoučký kůň úpěl ďábelské ódy. Η γρήγορη καφέ αλεπού. "
  "敏捷的棕色狐狸跳过了懒狗。 الثعلب البني السريع 🦊🐕 naïve café e\u0301\n\n"
  "Zurück zum Anfang!\tTabs\u00a0and\u2003odd spaces.\n"
)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv("LLMJAX_CACHE", str(tmp_path / "cache"))


def assert_lossless(tagged, text):
  """Word spans are ordered, disjoint, cover every non-space character, and the notes
  stream decodes back to `text`."""
  starts, ends = tagged.starts.tolist(), tagged.ends.tolist()
  assert all(s < e for s, e in zip(starts, ends))
  assert all(e <= s for e, s in zip(ends, starts[1:]))
  covered = np.zeros(len(text), bool)
  for s, e in zip(starts, ends):
    covered[s:e] = True
  assert all(covered[i] or text[i].isspace() for i in range(len(text)))
  char = tokenizer_lib.get_tokenizer("char")
  for variant in ("pre", "post"):
    stream = notes.weave(tagged, variant, char)
    assert stream.num_notes == tagged.num_words
    assert char.decode(notes.strip_notes(stream.ids, char.vocab_size).tolist()) == text


def test_text_over_nlp_max_length_is_tagged_in_pieces_without_loss(monkeypatch):
  text = ("The old dog sleeps by the door. " * 4 + "\n\n") * 25  # 3,250 characters.
  whole = notes.tag_text(text, use_cache=False)
  nlp = notes.load_pipeline(notes.DEFAULT_MODEL, "tag")
  monkeypatch.setattr(nlp, "max_length", 200)  # spaCy raises E088 on a longer piece.
  pieces = notes.tag_text(text, use_cache=False)
  assert len(text) > 10 * nlp.max_length
  np.testing.assert_array_equal(pieces.starts, whole.starts)
  np.testing.assert_array_equal(pieces.ends, whole.ends)
  assert pieces.num_words == 8 * 4 * 25
  assert_lossless(pieces, text)


@pytest.mark.parametrize("model", [notes.DEFAULT_MODEL, "cs_core_news_sm"])
def test_non_english_text_is_tagged_without_loss(model):
  pytest.importorskip(model)
  tagged = notes.tag_text(MIXED, model, use_cache=False)
  assert tagged.num_words >= 30
  assert_lossless(tagged, MIXED)
