"""Log finished runs (config, metrics, summary) into MLflow.

python -m llmjax.track runs/a runs/b --experiment=llmjax
"""

import argparse
import sys

from llmjax.runs.track import log_finished_run, tracking_uri


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m llmjax.track",
    description="Log finished llmjax runs (config, metrics, summary) into MLflow.",
  )
  parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
  parser.add_argument("--experiment", default="llmjax", help="MLflow experiment name.")
  args = parser.parse_args(argv)
  failed = 0
  for run_dir in args.run_dirs:
    try:
      run_id = log_finished_run(run_dir, args.experiment)
    except Exception as e:  # noqa: BLE001 - report each run dir, go on with the next.
      print(f"error: {run_dir}: {type(e).__name__}: {e}", file=sys.stderr)
      failed += 1
    else:
      print(f"{run_dir}: MLflow run {run_id} at {tracking_uri(run_dir)}")
  return 1 if failed else 0


def run():
  """Runs the program with the process's command line."""
  sys.exit(main())


if __name__ == "__main__":
  run()
