"""How much of a book a trained model recites: prompt with a line, check the next one.

  python -m llmjax.recite --workdir=runs/book --text=book.txt            # the last 5%
  python -m llmjax.recite --workdir=runs/book --text=book.txt --tail=1   # every line

Every non-empty line in the last `--tail` of the text that is followed by another
non-empty line is a prompt, given alone and with its line break (`--forms`); the model
continues it greedily and passes when it writes the book's next line, after the book's
blank lines if a paragraph break comes between (leading and trailing spaces ignored;
`llmjax.inference.recitation`, the check book training stops on). Prints a
table of the prompts and the share recited, and writes it as JSON with `--out`.
"""

from __future__ import annotations

import os
import pathlib

from absl import app, flags

from llmjax import api
from llmjax.cli import common as cli
from llmjax.data import sources
from llmjax.inference import recitation
from llmjax.util import errors, fileio, markdown


def recite(sampler, text: str, tail: float = 0.05, forms=recitation.FORMS) -> dict:
  """`llmjax.inference.recitation.recite` through a `Sampler`, greedy."""

  def continue_fn(prompt: str, max_tokens: int) -> str:
    return sampler.generate_text(
      prompt, max_tokens=max_tokens, temperature=0.0, include_prompt=False
    )

  return recitation.recite(
    continue_fn, lambda s: len(sampler.tokenizer.encode(s)), text, tail, tuple(forms)
  )


def table(result: dict) -> str:
  body = markdown.table(
    ["prompt", "given", "next line of the book", "recited"],
    [
      [r["prompt"], r["form"], r["expected"], "yes" if r["recited"] else r["got"]]
      for r in result["rows"]
    ],
  )
  skipped = result.get("ambiguous", 0)
  note = (
    f" {skipped} more {'line recurs' if skipped == 1 else 'lines recur'} in the book before "
    "different lines, so the line alone does not say which comes next: not asked."
    if skipped
    else ""
  )
  return (
    f"{body}\n\n{result['recited']} of {result['prompts']} prompts ({result['lines']} lines "
    f"of the last {result['tail']:.0%}, given as {' and '.join(result['forms'])}) continued "
    f"exactly.{note}"
  )


def define_flags() -> None:
  """The command line's flags (defined only when run as a program, so importing this module
  beside other command-line modules does not redefine their flags)."""
  flags.DEFINE_string("workdir", None, "The trained run.")
  flags.DEFINE_string("text", None, "The book it was trained on (a UTF-8 file).")
  flags.DEFINE_float("tail", 0.05, "Share of the text, from its end, whose lines are prompts.")
  flags.DEFINE_string("out", "", "Also write the result as JSON here.")
  flags.DEFINE_list(
    "forms", list(recitation.FORMS), "How each line is given: line (alone), line+newline."
  )
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
    result = recite(api.Sampler(args.workdir, seed=0), text, args.tail, args.forms)
    print(table(result))
    if out is not None:
      fileio.atomic_write_json(out, result, indent=1)


def run():
  """Runs the program with the process's command line."""
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
