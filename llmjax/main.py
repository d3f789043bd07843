"""Command-line entry point: parses flags and dispatches on `config.job`.

  python -m llmjax.main --config=configs/shakespeare.py:cpu --workdir=runs/shakespeare
  python -m llmjax.main --config=configs/book.py:cpu --config.data.path=book.txt --workdir=runs/book
  python -m llmjax.main --config=configs/shakespeare.py --config_help
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from llmjax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config: configs/NAME.py[:VARIANT].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, config "
                                "(default runs/<config.name>).")
_CONFIG_HELP = flags.DEFINE_bool("config_help", False, "Print every config key with its "
                                 "default and meaning, then exit.")


def main(argv):
  del argv
  cli.quiet_logs()
  from llmjax import config_util  # pylint: disable=import-outside-toplevel
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/NAME.py[:VARIANT] is required. Available: "
                         + ", ".join(config_util.available_configs()))
  if _CONFIG_HELP.value:
    print(config_util.help_text(config, flags.FLAGS["config"].config_filename))
    return
  try:
    config_util.validate(config)
  except config_util.ConfigError as e:
    sys.exit(f"Config error: {e}")
  workdir = _WORKDIR.value or f"runs/{config.name}"  # Default: runs/<config.name>.
  if not _WORKDIR.value:
    print(f"--workdir not given: using {workdir}", flush=True)
  from llmjax import jobs  # pylint: disable=import-outside-toplevel
  jobs.run(config, workdir)


def parse_flags(argv):
  """absl parsing, with config override errors (unknown key, wrong type) as one clear line."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    message = str(e).replace("\\n", " ").replace("\\'", "'").strip("'\" ")
    sys.exit(f"Flag error: {message}\nList every config key with --config_help.")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
