"""Command-line entry point: parses flags and dispatches on `config.job`.

python -m llmjax.main --config=configs/shakespeare.py:cpu --workdir=runs/shakespeare
python -m llmjax.main --config=configs/book.py:cpu --config.data.path=book.txt --workdir=runs/book
python -m llmjax.main --config=configs/shakespeare.py --config_help
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from llmjax import jobs
from llmjax.cli import common as cli
from llmjax.config import docs as config_docs
from llmjax.config import load as config_load
from llmjax.config import validate as config_validate
from llmjax.parallel import mesh
from llmjax.util import errors

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Experiment config: configs/NAME.py[:VARIANT].", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Run directory: checkpoints, metrics, config (default runs/<config.name>)."
)
_CONFIG_HELP = flags.DEFINE_bool(
  "config_help", False, "Print every config key with its default and meaning, then exit."
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator",
  "",
  "Multi-host: host:port of process 0 (else $LLMJAX_COORDINATOR; SLURM is detected).",
)
_NUM_PROCESSES = flags.DEFINE_integer(
  "num_processes", 0, "Multi-host: number of processes (else $LLMJAX_NUM_PROCESSES)."
)
_OVERRIDDEN: list[str] = []  # The --config.KEY names given on the command line.
_PROCESS_ID = flags.DEFINE_integer(
  "process_id", -1, "Multi-host: this process's index (else $LLMJAX_PROCESS_ID)."
)


def main(argv):
  del argv
  cli.quiet_logs()
  config = _CONFIG.value
  if config is None:
    raise app.UsageError(
      "--config=configs/NAME.py[:VARIANT] is required. Available: "
      + ", ".join(config_load.available_configs())
    )
  if _CONFIG_HELP.value:
    print(config_docs.help_text(config, flags.FLAGS["config"].config_filename))
    return
  try:
    config_validate.validated(config)
    jobs.check_overrides(config, _OVERRIDDEN)
  except errors.ConfigError as e:
    sys.exit(f"Config error: {e}")
  workdir = _WORKDIR.value or f"runs/{config.name}"  # Default: runs/<config.name>.
  if not _WORKDIR.value:
    print(f"--workdir not given: using {workdir}", flush=True)
  try:
    mesh.maybe_initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  except ValueError as e:
    sys.exit(f"Error: {e}")
  with cli.user_errors():
    jobs.run(config, workdir)


def parse_flags(argv):
  """absl parsing, with config errors (missing file, unknown key, wrong type) as one line."""
  try:
    _OVERRIDDEN.extend(cli.check_config_flags(argv[1:]))
    return flags.FLAGS(argv)
  except errors.ConfigError as e:
    sys.exit(f"Config error: {e}")
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    message = " ".join(str(e).split())
    sys.exit(f"Flag error: {message} List every config key with --config_help.")


def run():
  """Runs the program with the process's command line."""
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
