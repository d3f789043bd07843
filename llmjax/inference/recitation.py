"""Recitation: does a model continue a book's lines with the book's next lines?

Every non-empty line in the last `tail` of the text that is followed by another non-empty
line is a prompt, given twice: as the line alone, and as the line with its line break (and
the blank lines of a paragraph break, if one comes next). The model continues it greedily;
it recites the line when, after ending the prompt's line and writing the book's blank
lines (the first form) or straight away (the second), it writes the book's next line
(leading and trailing spaces ignored). A line that recurs in the book before a different
line (a speaker's name in a play) cannot ask for one of them: it is left out and counted
(`ambiguous`). `llmjax.recite` prints the table; book training stops once `recite.goal`
of the prompts are recited.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from llmjax.util import errors

# (prompt text, max new tokens) -> the greedy continuation's text.
ContinueFn = Callable[[str, int], str]
FORMS = ("line", "line+newline")


def _pairs(text: str) -> list[tuple[int, str, str]]:
  """(offset, line, what follows it) for every non-empty line of `text` followed by a
  non-empty line that ends with a line break."""
  lines = text.split("\n")[:-1]  # The last piece has no line end.
  offsets, offset = [], 0
  for line in lines:
    offsets.append(offset)
    offset += len(line) + 1
  filled = [i for i, line in enumerate(lines) if line.strip()]
  return [(offsets[i], lines[i], "\n" * (j - i - 1) + lines[j]) for i, j in zip(filled, filled[1:])]


def split_tail(text: str, tail: float) -> tuple[list[tuple[str, str]], list[str]]:
  """(`tail_pairs`, `ambiguous_lines`) from one pass over the text."""
  if not 0 < tail <= 1:
    raise errors.ConfigError(
      f"tail={tail} must be in (0, 1]: the share of the text, from its end, whose lines are "
      "prompts."
    )
  start = len(text) - int(round(tail * len(text)))
  pairs = _pairs(text)
  following = collections.defaultdict(set)
  for _, line, after in pairs:
    following[line].add(after)
  in_tail = [(line, after) for offset, line, after in pairs if offset >= start]
  return (
    [(line, after) for line, after in in_tail if len(following[line]) == 1],
    [line for line, _ in in_tail if len(following[line]) > 1],
  )


def tail_pairs(text: str, tail: float) -> list[tuple[str, str]]:
  """(line, what follows it) for every non-empty line starting in the last `tail` of
  `text` followed by a non-empty line that ends with a line break (a text cut mid-line has
  no complete last line to recite). What follows is that next line, after one "\n" for
  each blank line between them. A line that recurs in the text before another line (a
  speaker's name in a play) does not say which one comes next: it is left out
  (`ambiguous_lines`)."""
  return split_tail(text, tail)[0]


def ambiguous_lines(text: str, tail: float) -> list[str]:
  """The tail's lines that `tail_pairs` leaves out: the same line is followed by a
  different line elsewhere in the text, so the line alone cannot ask for one of them."""
  return split_tail(text, tail)[1]


def next_line(prompt: str, continuation: str, blank_lines: int = 0) -> tuple[str, bool]:
  """(the line the model wrote after the prompt and `blank_lines` blank lines, whether it
  ended the prompt's line and wrote those blank lines first); when it went on with the
  prompt's line, that whole line instead. A prompt that ends with a line break has ended
  its line, and given the blank lines, already."""
  if prompt.endswith("\n"):
    rest, blank_lines = continuation, 0
  else:
    same_line, _, rest = continuation.partition("\n")
    if same_line.strip():
      return prompt.strip() + same_line.rstrip(), False
  written = rest.split("\n")
  blanks = written[:blank_lines]
  got = written[blank_lines] if len(written) > blank_lines else ""
  return got, len(blanks) == blank_lines and not any(b.strip() for b in blanks)


def recite(
  continue_fn: ContinueFn,
  count_tokens: Callable[[str], int],
  text: str,
  tail: float = 0.05,
  forms: tuple[str, ...] = FORMS,
) -> dict:
  """Greedy continuation of every prompt of `tail_pairs` in each of `forms`; returns the
  rows and the share of prompts whose next line is recited exactly."""
  unknown = [f for f in forms if f not in FORMS]
  if unknown or not forms:
    raise errors.ConfigError(f"forms={forms!r}: use one or both of {FORMS}.")
  rows = []
  pairs, ambiguous = split_tail(text, tail)
  for line, following in pairs:
    budget = count_tokens("\n" + following) + 4
    blank_lines = len(following) - len(following.lstrip("\n"))
    for form in forms:
      # With its line break come the blank lines after it: the prompt ends where the next
      # line begins (`Tokenizer.encode_prompt` encodes them as the book does).
      prompt = line + "\n" * (blank_lines + 1) if form == "line+newline" else line
      got, ended = next_line(prompt, continue_fn(prompt, budget), blank_lines)
      rows.append(
        {
          "prompt": line.strip(),
          "form": form,
          "expected": following.strip(),
          "got": got.strip(),
          "recited": ended and got.strip() == following.strip(),
        }
      )
  recited = sum(r["recited"] for r in rows)
  return {
    "tail": tail,
    "forms": list(forms),
    "lines": len(rows) // len(forms),
    "ambiguous": len(ambiguous),
    "prompts": len(rows),
    "recited": recited,
    "share": recited / len(rows) if rows else 0.0,
    "rows": rows,
  }
