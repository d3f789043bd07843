"""How much of a book a trained model recites: prompt with a line, check the next one.

  python -m llmjax.recite --workdir=runs/book --text=book.txt            # the last 5%
  python -m llmjax.recite --workdir=runs/book --text=book.txt --tail=1   # every line

Every non-empty line in the last `--tail` of the text that is followed by another
non-empty line is a prompt; the model continues it greedily and passes when it ends the
prompt's line and writes the book's next line (leading and trailing spaces ignored). Prints a
table of the prompts and the share recited, and writes it as JSON with `--out`.
"""

from __future__ import annotations

import os
import pathlib

from absl import app, flags

from llmjax import api
from llmjax.cli import common as cli
from llmjax.data import sources
from llmjax.util import errors, fileio, markdown


def tail_pairs(text: str, tail: float) -> list[tuple[str, str]]:
  """(line, next line) for every non-empty line starting in the last `tail` of `text`
  whose next line is non-empty and ends with a line break (a text cut mid-line has no
  complete last line to recite)."""
  if not 0 < tail <= 1:
    raise errors.ConfigError(
      f"tail={tail} must be in (0, 1]: the share of the text, from "
      "its end, whose lines are prompts."
    )
  start = len(text) - int(round(tail * len(text)))
  pairs, offset = [], 0
  lines = text.split("\n")
  for line, following in zip(lines, lines[1:-1]):  # The last piece has no line end.
    if offset >= start and line.strip() and following.strip():
      pairs.append((line, following))
    offset += len(line) + 1
  return pairs


def next_line(prompt: str, continuation: str) -> tuple[str, bool]:
  """(the line the model wrote after the prompt, whether it ended the prompt's line first);
  when it went on with the prompt's line, that whole line instead."""
  same_line, _, rest = continuation.partition("\n")
  if same_line.strip():
    return prompt.strip() + same_line.rstrip(), False
  return rest.split("\n", 1)[0], True


def recite(sampler, text: str, tail: float = 0.05) -> dict:
  """Greedy continuation of every line pair of `tail_pairs`; returns the rows and the share
  whose next line is recited exactly."""
  rows = []
  for line, following in tail_pairs(text, tail):
    budget = len(sampler.tokenizer.encode("\n" + following)) + 4
    got, ended = next_line(
      line, sampler.generate_text(line, max_tokens=budget, temperature=0.0, include_prompt=False)
    )
    rows.append(
      {
        "prompt": line.strip(),
        "expected": following.strip(),
        "got": got.strip(),
        "recited": ended and got.strip() == following.strip(),
      }
    )
  recited = sum(r["recited"] for r in rows)
  return {
    "tail": tail,
    "prompts": len(rows),
    "recited": recited,
    "share": recited / len(rows) if rows else 0.0,
    "rows": rows,
  }


def table(result: dict) -> str:
  body = markdown.table(
    ["prompt", "next line of the book", "recited"],
    [[r["prompt"], r["expected"], "yes" if r["recited"] else r["got"]] for r in result["rows"]],
  )
  return (
    f"{body}\n\n{result['recited']} of {result['prompts']} lines of the last "
    f"{result['tail']:.0%} continued exactly."
  )


def define_flags() -> None:
  """The command line's flags (defined only when run as a program, so importing this module
  beside other command-line modules does not redefine their flags)."""
  flags.DEFINE_string("workdir", None, "The trained run.")
  flags.DEFINE_string("text", None, "The book it was trained on (a UTF-8 file).")
  flags.DEFINE_float("tail", 0.05, "Share of the text, from its end, whose lines are prompts.")
  flags.DEFINE_string("out", "", "Also write the result as JSON here.")
  flags.mark_flags_as_required(["workdir", "text"])


def check_out(out: str) -> pathlib.Path | None:
  """The `--out` path, checked before any work: its directory exists and is writable."""
  if not out:
    return None
  path = pathlib.Path(out).expanduser()
  parent = path.parent
  if path.is_dir():
    raise errors.ConfigError(
      f"--out={out} is a directory; give a file name, e.g. {path}/recite.json."
    )
  if not parent.is_dir():
    raise errors.ConfigError(
      f"--out={out}: directory {parent} does not exist; create it (mkdir -p {parent}) or "
      "pick another path."
    )
  if not os.access(parent, os.W_OK):
    raise errors.ConfigError(f"--out={out}: directory {parent} is not writable; pick another path.")
  return path


def main(argv):
  del argv
  cli.quiet_logs()
  args = flags.FLAGS
  with cli.user_errors():
    path = pathlib.Path(args.text).expanduser()
    if not path.is_file():
      raise errors.DataError(
        f"--text={args.text}: no such file; give the book the run was trained on."
      )
    out = check_out(args.out)
    # Read as training reads it: bytes that are not UTF-8 become U+FFFD, with a warning.
    text, _ = sources.decode_text(path.read_bytes(), f"--text={args.text}")
    result = recite(api.Sampler(args.workdir, seed=0), text, args.tail)
    print(table(result))
    if out is not None:
      fileio.atomic_write_json(out, result, indent=1)


def run():
  """Runs the program with the process's command line."""
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
