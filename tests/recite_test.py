"""Tests for llmjax.recite: which lines are prompts, and what counts as recited."""

import pytest

from llmjax.cli import recite
from llmjax.util import errors

TEXT = "Title\n\nOne line\nTwo line\n  Three line\n\nFour\nFive\n"


def test_tail_pairs_take_lines_starting_in_the_tail_followed_by_a_line():
  assert recite.tail_pairs(TEXT, 1.0) == [
    ("One line", "Two line"),
    ("Two line", "  Three line"),
    ("Four", "Five"),
  ]
  # "Four" starts 10 characters before the end; "Five" is followed by no line.
  assert recite.tail_pairs(TEXT, 10 / len(TEXT)) == [("Four", "Five")]
  assert recite.tail_pairs(TEXT, 9 / len(TEXT)) == []
  assert recite.tail_pairs(TEXT + "Six, cut sh", 1.0)[-1] == ("Four", "Five")
  with pytest.raises(errors.ConfigError, match=r"tail=0 must be in \(0, 1\]"):
    recite.tail_pairs(TEXT, 0)


class FakeSampler:
  """Continues each prompt with a fixed text."""

  class tokenizer:  # pylint: disable=invalid-name
    encode = staticmethod(list)

  def __init__(self, answers):
    self.answers, self.calls = answers, []

  def generate_text(self, prompt, max_tokens, temperature, include_prompt):
    self.calls.append((prompt, max_tokens, temperature, include_prompt))
    return self.answers[prompt]


def test_recite_counts_exact_next_lines_only():
  sampler = FakeSampler(
    {"One line": "\nTwo line\nmore", "Two line": "\nThree line", "Four": " Five\nFive"}
  )
  result = recite.recite(sampler, TEXT, 1.0)
  assert [r["recited"] for r in result["rows"]] == [True, True, False]
  assert result["rows"][2]["got"] == "Four Five"  # The prompt's own line went on.
  assert (result["prompts"], result["recited"]) == (3, 2)
  assert sampler.calls[0] == ("One line", len("\nTwo line") + 4, 0.0, False)
  assert "2 of 3 lines of the last 100% continued exactly." in recite.table(result)


def test_importing_it_defines_no_flags():
  # Command-line modules share absl's global flags: one that defined --workdir on import
  # would clash with llmjax.sample (or any other) imported in the same process.
  from absl import flags  # pylint: disable=import-outside-toplevel

  assert not flags.FLAGS.flags_by_module_dict().get(recite.__name__)


def test_command_line_names_a_missing_text(tmp_path):
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel

  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "llmjax.recite",
      f"--workdir={tmp_path}",
      f"--text={tmp_path / 'book.txt'}",
    ],
    capture_output=True,
    text=True,
    check=False,
  )
  assert out.returncode != 0
  assert f"--text={tmp_path / 'book.txt'}: no such file" in out.stderr + out.stdout
