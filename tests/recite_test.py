"""Tests for llmjax.recite: which lines are prompts, and what counts as recited."""

from llmjax.cli import recite

TEXT = "Title\n\nOne line\nTwo line\n  Three line\n\nFour\nFive\n"


class FakeSampler:
  """Continues each prompt with a fixed text."""

  class tokenizer:  # pylint: disable=invalid-name
    encode = staticmethod(list)

  def __init__(self, answers):
    self.answers, self.calls = answers, []

  def generate_text(self, prompt, max_tokens, temperature, include_prompt):
    self.calls.append((prompt, max_tokens, temperature, include_prompt))
    return self.answers[prompt]


def test_recite_asks_the_sampler_greedily_in_both_forms():
  sampler = FakeSampler(
    {
      "Title": "\n\nOne line",  # The paragraph break, then the next line.
      "Title\n\n": "One line",  # The line+newline prompt holds the paragraph break.
      "One line": "\nTwo line\nmore",
      "One line\n": "Two line\n",
      "Two line": "\nThree line",
      "Two line\n": "Three",
      "  Three line": "\nFour",  # The blank line before "Four" is missing.
      "  Three line\n\n": "Four",
      "Four": " Five\nFive",
      "Four\n": "Five",
    }
  )
  result = recite.recite(sampler, TEXT, 1.0)
  recited = [r["recited"] for r in result["rows"]]
  assert recited == [True, True, True, True, True, False, False, True, False, True]
  assert result["rows"][8]["got"] == "Four Five"  # The prompt's own line went on.
  assert (result["lines"], result["prompts"], result["recited"]) == (5, 10, 7)
  assert sampler.calls[0] == ("Title", len("\n\nOne line") + 4, 0.0, False)
  assert sampler.calls[1][0] == "Title\n\n"
  assert "7 of 10 prompts (5 lines of the last 100%, given as line and line+newline)" in (
    recite.table(result)
  )
  alone = recite.recite(sampler, TEXT, 1.0, forms=["line"])
  assert (alone["prompts"], alone["recited"]) == (5, 3)
  assert "recur" not in recite.table(result)


def test_the_table_counts_the_lines_left_out():
  play = "A.\nYes.\nB.\nNo.\nA.\nWhy?\nEnd\n"
  sampler = FakeSampler(
    {"Yes.": "\nB.", "Yes.\n": "B.", "B.": "\nNo.", "B.\n": "x", "No.": "", "No.\n": ""}
  )
  sampler.answers |= {"Why?": "\nEnd", "Why?\n": "End"}
  result = recite.recite(sampler, play, 1.0)
  assert (result["lines"], result["ambiguous"], result["recited"]) == (4, 2, 5)
  assert "5 of 8 prompts" in recite.table(result)
  assert "2 more lines recur in the book before different lines" in recite.table(result)
  assert "1 more line recurs" in recite.table({**result, "ambiguous": 1})


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
