"""Tokenise the math datasets into the token cache and print the manifest.

python -m llmjax.cli.math_tokens [MAX_TOKENS] [DATASET_IDS]
"""

import json
import sys

from llmjax.config import schema as config_schema
from llmjax.data.math_text import prepare_math_tokens


def main(argv: list[str]) -> None:
  cfg = config_schema.base_config().data
  cfg.max_tokens = int(argv[1]) if len(argv) > 1 else 2_000_000
  cfg.path = argv[2] if len(argv) > 2 else ""
  splits = prepare_math_tokens(cfg)
  print(json.dumps({**splits.manifest, "dir": str(splits.dir)}, indent=2))


def run():
  """Runs the program with the process's command line."""
  main(sys.argv)


if __name__ == "__main__":
  run()
