"""Tokenise a source into the token cache and print its manifest.

python -m llmjax.cli.tokens SOURCE PATH TOKENIZER   (e.g. file book.txt gpt2)
"""

import json
import sys

from llmjax.config import schema as config_schema
from llmjax.data.shards import prepare_tokens


def main(argv: list[str]) -> None:
  cfg = config_schema.base_config().data
  for key, value in zip(("source", "path", "tokenizer"), argv[1:]):
    cfg[key] = value
  splits = prepare_tokens(cfg)
  print(json.dumps({**splits.manifest, "dir": str(splits.dir)}, indent=2))


def run():
  """Runs the program with the process's command line."""
  main(sys.argv)


if __name__ == "__main__":
  run()
