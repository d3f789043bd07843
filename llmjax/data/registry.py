"""The data sources: `data.source` -> the builder of its token splits, in one place.

Every LM-shaped job gets its tokens from `prepare_tokens(config.data)` (through
`llmjax.data.data_splits`), and config validation checks `data.source`,
`data.path` and `data.val_fraction` with `check_data` (the val_fraction rule is
`shards.check_val_fraction`), so a source the config accepts is one a builder
exists for.

Text sources (`sources.TEXT_READERS`: shakespeare, file, url, hf) are read whole
and tokenised by `shards.prepare_tokens`; their text can also become a notes
corpus. `wikitext2` has fixed train/validation/test splits; `math` streams capped
math corpora (or generates one offline, `data.path='generated'`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from llmjax.config import schema as config_base
from llmjax.data import math_text, shards, sources, wikitext
from llmjax.util import errors


@dataclasses.dataclass(frozen=True)
class Source:
  """One value of `data.source`.

  Attributes:
    name: the `data.source` value.
    summary: what it reads, for error messages and help.
    build: (data_cfg, cache_root, progress=...) -> shards.TokenSplits.
    needs_path: whether `data.path` must be set.
    has_text: whether `sources.read_source` reads its whole text (notes corpora
      are made from text).
    fixed_splits: whether the source has its own validation split (then
      `data.val_fraction` is not read and may not be changed from its default).
  """

  name: str
  summary: str
  build: Callable[..., shards.TokenSplits]
  needs_path: bool = False
  has_text: bool = False
  fixed_splits: bool = False


DEFAULT_VAL_FRACTION = config_base.section("data").val_fraction

SOURCES: dict[str, Source] = {
  s.name: s
  for s in (
    Source(
      "shakespeare",
      "the bundled Shakespeare plays and poems (offline)",
      shards.prepare_tokens,
      has_text=True,
    ),
    Source(
      "file",
      "one local UTF-8 text file (data.path)",
      shards.prepare_tokens,
      needs_path=True,
      has_text=True,
    ),
    Source(
      "url",
      "an http(s):// or file:// URL, downloaded once (data.path)",
      shards.prepare_tokens,
      needs_path=True,
      has_text=True,
    ),
    Source(
      "hf",
      "an HF dataset: hub id, local data files or save_to_disk dir (data.path)",
      shards.prepare_tokens,
      needs_path=True,
      has_text=True,
    ),
    Source(
      "wikitext2",
      "WikiText-2's train/validation/test splits (data.path '' = the "
      "hub, a local copy, or 'shakespeare' for an offline stand-in)",
      wikitext.prepare_wikitext,
      fixed_splits=True,
    ),
    Source(
      "math",
      "math text streamed from HF datasets (data.path '' = the hub "
      "defaults, or 'generated' for generated exercises, offline)",
      math_text.prepare_math_tokens,
    ),
  )
}
assert set(sources.TEXT_READERS) == {n for n, s in SOURCES.items() if s.has_text}


def known_sources() -> tuple[str, ...]:
  """The valid values of `data.source`."""
  return tuple(SOURCES)


def get_source(name: str) -> Source:
  """The source named `name`; ConfigError naming the valid ones otherwise."""
  source = SOURCES.get(name)
  if source is None:
    valid = "; ".join(f"{s.name} ({s.summary})" for s in SOURCES.values())
    raise errors.ConfigError(f"data.source={name!r} is not a data source; use one of: {valid}.")
  return source


def check_data(data_cfg) -> None:
  """Checks `data.source`, `data.path` and `data.val_fraction` before any work."""
  data_cfg = config_base.section("data", data_cfg)  # Keys it lacks: their defaults.
  source = get_source(data_cfg.source)
  if source.needs_path and not data_cfg.path:
    raise errors.ConfigError(
      f"data.source={source.name!r} needs data.path: "
      f"{source.summary}; e.g. --config.data.path=book.txt"
    )
  val_fraction = shards.check_val_fraction(data_cfg.val_fraction)
  if source.fixed_splits and val_fraction != DEFAULT_VAL_FRACTION:
    raise errors.ConfigError(
      f"data.val_fraction={val_fraction} is not read by data.source={source.name!r}, which has "
      "fixed train/validation/test splits; remove the override (or use data.source=file "
      "with data.path to split a text of your own)."
    )


def prepare_tokens(
  data_cfg, cache_root: str | os.PathLike[str] | None = None, *, progress: bool = True
) -> shards.TokenSplits:
  """The token splits of `data_cfg`'s source, built once and cached.

  Args:
    data_cfg: the data config section (source, path, tokenizer, val_fraction, ...).
    cache_root: cache root; default `$LLMJAX_CACHE`.
    progress: show progress bars while building.
  """
  data_cfg = config_base.section("data", data_cfg)  # Keys it lacks: their defaults.
  check_data(data_cfg)
  return get_source(data_cfg.source).build(data_cfg, cache_root, progress=progress)
