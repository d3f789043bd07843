"""Tests for llmjax.inference.recitation and book training's recitation goal."""

import json

import numpy as np
import pytest
from flax import nnx

from llmjax import data as data_lib
from llmjax import jobs, models
from llmjax.config import load as config_load
from llmjax.data import tokenizer as tokenizer_lib
from llmjax.inference import recitation
from llmjax.runs import load as load_lib
from llmjax.train import lm, recite_check
from llmjax.util import errors

TEXT = "Title\n\nOne line\nTwo line\n  Three line\n\nFour\nFive\n"


def test_tail_pairs_take_lines_starting_in_the_tail_followed_by_a_line():
  # A blank line between two lines (a paragraph break) is part of what follows.
  assert recitation.tail_pairs(TEXT, 1.0) == [
    ("Title", "\nOne line"),
    ("One line", "Two line"),
    ("Two line", "  Three line"),
    ("  Three line", "\nFour"),
    ("Four", "Five"),
  ]
  # "Four" starts 10 characters before the end; "Five" is followed by no line.
  assert recitation.tail_pairs(TEXT, 10 / len(TEXT)) == [("Four", "Five")]
  assert recitation.tail_pairs(TEXT, 9 / len(TEXT)) == []
  assert recitation.tail_pairs(TEXT + "Six, cut sh", 1.0)[-1] == ("Four", "Five")
  assert recitation.tail_pairs("A\n\n\n\nB\n", 1.0) == [("A", "\n\n\nB")]
  with pytest.raises(errors.ConfigError, match=r"tail=0 must be in \(0, 1\]"):
    recitation.tail_pairs(TEXT, 0)


def test_a_line_that_recurs_before_different_lines_is_left_out():
  play = "HAMLET.\nTo be.\nHORATIO.\nMy lord.\nHAMLET.\nNot to be.\nHORATIO.\nMy lord.\nEnd\n"
  # "HAMLET." and "My lord." come before two different lines; "HORATIO." always before
  # "My lord.".
  assert recitation.tail_pairs(play, 1.0) == [
    ("To be.", "HORATIO."),
    ("HORATIO.", "My lord."),
    ("Not to be.", "HORATIO."),
    ("HORATIO.", "My lord."),
  ]
  assert recitation.ambiguous_lines(play, 1.0) == ["HAMLET.", "My lord."] * 2
  result = recitation.recite(lambda prompt, n: "", len, play, 1.0)
  assert (result["lines"], result["ambiguous"], result["prompts"]) == (4, 4, 8)


def test_both_prompt_forms_must_give_the_next_line():
  answers = {
    "Title": "\n\nOne line",  # Ends its line, the blank line, the next line: recited.
    "Title\n\n": "\nOne line",  # Given the paragraph break, wrote one more: not recited.
    "One line": "\nTwo line\nmore",  # Ends its line, then the next line: recited.
    "One line\n": "Two line\n",  # Given the line break: the next line at once.
    "Two line": "\nThree line",
    "Two line\n": "Three line and more",  # Went on past the book's line: not recited.
    "  Three line": "\n\nFour\n",
    "  Three line\n\n": "Four",
    "Four": " Five\nFive",  # Went on with the prompt's own line: not recited.
    "Four\n": "Five",
  }
  calls = []

  def continue_fn(prompt, max_tokens):
    calls.append((prompt, max_tokens))
    return answers[prompt]

  result = recitation.recite(continue_fn, len, TEXT, 1.0)
  assert [(r["prompt"], r["form"], r["recited"]) for r in result["rows"]] == [
    ("Title", "line", True),
    ("Title", "line+newline", False),
    ("One line", "line", True),
    ("One line", "line+newline", True),
    ("Two line", "line", True),
    ("Two line", "line+newline", False),
    ("Three line", "line", True),
    ("Three line", "line+newline", True),
    ("Four", "line", False),
    ("Four", "line+newline", True),
  ]
  assert result["rows"][8]["got"] == "Four Five"
  assert (result["lines"], result["prompts"], result["recited"]) == (5, 10, 7)
  assert result["share"] == pytest.approx(7 / 10)
  assert calls[0] == ("Title", len("\n\nOne line") + 4)
  only_alone = recitation.recite(continue_fn, len, TEXT, 1.0, forms=("line",))
  assert (only_alone["prompts"], only_alone["recited"]) == (5, 4)
  with pytest.raises(errors.ConfigError, match="forms="):
    recitation.recite(continue_fn, len, TEXT, 1.0, forms=("sentence",))


def book_smoke(tmp_path, **overrides):
  config = config_load.load_config("configs/book.py:smoke").unlock()
  config_load.apply_overrides(
    config, {"train.steps": 12, "train.eval_every": 4, "mesh.num_devices": 1, **overrides}
  )
  return config


def test_recitation_check_asks_a_real_model_for_every_tail_prompt():
  # An untrained model recites nothing, but every prompt of the tail is asked, both forms,
  # through one compiled generator reused across checks.
  config = config_load.load_config("configs/book.py:smoke")
  config.unlock().model.vocab_size = 257
  config.recite.tail = 0.2
  model = models.build(config.model, 0)
  graphdef, params = nnx.split(model)
  tok = tokenizer_lib.get_tokenizer("char")
  check = recite_check.RecitationCheck(config.recite, graphdef, tok, tok.encode(TEXT * 3))
  # The last 20%: the lines from "  Three line" on.
  assert check.usable() and check.pairs == [("  Three line", "\nFour"), ("Four", "Five")]
  first = check(nnx.to_pure_dict(params))
  assert first == {"recited_share": 0.0, "recited": 0, "recite_prompts": 4}
  compiled = check.generator.compilations
  assert check(nnx.to_pure_dict(params)) == first
  assert check.generator.compilations == compiled
  assert check.goal_reached(first) is None
  assert "recited 4 of 4 prompts" in check.goal_reached(
    {"recited_share": 1.0, "recited": 4, "recite_prompts": 4}
  )


def test_book_run_stops_once_the_goal_is_recited(tmp_path, monkeypatch, capsys):
  shares = iter([0.5, 1.0, 1.0])

  def fake_check(self, params):
    del self, params
    share = next(shares)
    return {"recited_share": share, "recited": int(10 * share), "recite_prompts": 10}

  monkeypatch.setattr(recite_check.RecitationCheck, "__call__", fake_check)
  result = jobs.run(book_smoke(tmp_path, **{"recite.goal": 0.9}), tmp_path / "run")
  assert result.step == 8 and result.stopped_early
  out = capsys.readouterr().out
  assert "Goal reached at step 8: recited 10 of 10 prompts" in out
  assert "recited 10 of 10 tail prompts" in out  # The closing line.
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert (summary["recited_share"], summary["recited"], summary["recite_prompts"]) == (1.0, 10, 10)
  records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
  evals = [r for r in records if "val_loss" in r]
  assert [(r["step"], r["recited_share"], r["recite_prompts"]) for r in evals] == [
    (4, 0.5, 10),
    (8, 1.0, 10),
  ]


def test_a_book_trained_on_its_own_ids_leaves_every_other_row_untouched(tmp_path):
  # train.softmax_ids=train: the softmax runs over the book's ids only, so (no weight
  # decay) the output rows of ids the book never uses keep their initial values,
  # while the book's own rows train; evaluation still scores every id.
  config = book_smoke(tmp_path, **{"train.softmax_ids": "train", "train.steps": 4})
  result = jobs.run(config, tmp_path / "run")
  assert result.step == 4 and result.final_val_loss > 0
  trained, run_config, _ = load_lib.load_model(tmp_path / "run")
  initial = models.build(run_config.model, run_config.train.seed)
  tok = tokenizer_lib.get_tokenizer(run_config.data.tokenizer)
  book = data_lib.data_splits(run_config, None)[0].train
  used = lm.ids_present(book, run_config.model.vocab_size)
  assert 50 < len(used) < 2000  # A few hundred GPT-2 pieces of 50,257.
  assert tok.eot_id not in used
  before, after = np.asarray(initial.wte[...]), np.asarray(trained.wte[...])
  unused = np.setdiff1d(np.arange(len(before)), used)
  # (The run's jitted init and this one agree to rounding.)
  np.testing.assert_allclose(after[unused], before[unused], rtol=0, atol=1e-7)
  assert np.abs(after[used] - before[used]).max(axis=1).min() > 1e-4
