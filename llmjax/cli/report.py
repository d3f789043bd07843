"""Compare training runs: a markdown table and PNG plots.

python -m llmjax.report runs/a runs/b --out=report --x=tokens
"""

import argparse
import json
import sys
from collections.abc import Sequence

from llmjax.runs.report import X_AXES, ReportError, markdown_table, write_report


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m llmjax.report",
    description="Compare llmjax training runs: a markdown table and PNG plots.",
  )
  parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="Training workdirs.")
  parser.add_argument("--out", default="report", help="Output directory (default: report).")
  parser.add_argument(
    "--x", default="step", choices=sorted(X_AXES), help="X axis of the plots (default: step)."
  )
  parser.add_argument("--title", default="Run comparison", help="Heading of report.md.")
  args = parser.parse_args(argv)
  try:
    out = write_report(args.run_dirs, args.out, x=args.x, title=args.title)
  except ReportError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(markdown_table(json.loads((out / "report.json").read_text())["runs"]))
  print(f"\nWrote {out / 'report.md'} and {', '.join(p.name for p in sorted(out.glob('*.png')))}")
  return 0


def run():
  """Runs the program with the process's command line."""
  sys.exit(main())


if __name__ == "__main__":
  run()
