"""Training data: a config's token splits and the tokenizer that reads them.

`data_splits(config)` is what every LM-shaped job calls: the token splits of
`config.data` (`registry.prepare_tokens`, whatever `data.source`), or, when
`config.notes.variant` is set, the notes corpus of that text
(`notes.prepare_notes`), whose tokenizer writes notes as `[TAG]` strings.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib

from llmjax.config import schema as config_schema
from llmjax.data import notes, registry
from llmjax.data import tokenizer as tokenizer_lib
from llmjax.util import errors, fileio

NOTES_FILE = "notes.json"
WHOLE_TEXT_MESSAGE = (
  "data.val_fraction=0: training on the whole text; validation windows are drawn from "
  "the training text, so the validation loss measures memorisation, not generalisation"
)


def _notes_variant(config) -> str:
  """notes.variant ('' = plain text); a saved run's config may lack the section."""
  return config_schema.section("notes", config.get("notes")).variant


def data_splits(config, workdir: str | os.PathLike[str] | None = None):
  """Token splits and tokenizer of `config`'s corpus.

  Args:
    config: a full run config (sections data, notes, model).
    workdir: when given, a notes run records its note vocabulary there
      (`notes.json`), so sampling decodes notes without the corpus.

  Returns:
    (shards.TokenSplits, tokenizer.Tokenizer).

  Raises:
    errors.ConfigError: model.vocab_size is smaller than the corpus's.
  """
  splits, tokenizer = _splits(config)
  if splits.val_is_train:
    logging.getLogger(__name__).warning(WHOLE_TEXT_MESSAGE)
  if not _notes_variant(config):
    return splits, tokenizer
  if workdir is not None:
    fileio.atomic_write_json(
      pathlib.Path(workdir) / NOTES_FILE, {**splits.manifest["notes"], "corpus": str(splits.dir)}
    )
  return splits, tokenizer


def _splits(config):
  base = tokenizer_lib.get_tokenizer(config.data.tokenizer)
  if base.vocab_size > config.model.vocab_size:
    raise errors.ConfigError(
      f"model.vocab_size={config.model.vocab_size} is smaller than the tokenizer's "
      f"vocabulary ({base.vocab_size}); set --config.model.vocab_size={base.vocab_size}."
    )
  if not _notes_variant(config):
    if config.model.vocab_size > base.vocab_size:  # Its samples could not all be decoded.
      raise errors.ConfigError(
        f"model.vocab_size={config.model.vocab_size} is larger than the vocabulary of "
        f"data.tokenizer={config.data.tokenizer!r} ({base.vocab_size}): the model would "
        "sample ids the tokenizer cannot decode; set "
        f"--config.model.vocab_size={base.vocab_size}."
      )
    return registry.prepare_tokens(config.data), base
  registry.check_data(config.data)
  splits = notes.prepare_notes(config.data, config.notes)
  manifest = splits.manifest
  if manifest["vocab_size"] > config.model.vocab_size:
    raise errors.ConfigError(
      f"model.vocab_size={config.model.vocab_size} is smaller than the "
      f"{config.notes.variant!r} notes corpus's vocabulary "
      f"({manifest['vocab_size']}: {base.vocab_size} base tokens + "
      f"{len(manifest['notes']['note_vocab'])} notes of scheme "
      f"{manifest['notes']['scheme']!r}); set --config.model.vocab_size="
      f"{manifest['vocab_size']}."
    )
  return splits, notes.NotesTokenizer(base, manifest["notes"]["note_vocab"])


def run_tokenizer(config, workdir: str | os.PathLike[str] | None = None):
  """The tokenizer of a run: notes-aware for notes runs (from the run's
  `notes.json`, else from its corpus), the base tokenizer otherwise."""
  base = tokenizer_lib.get_tokenizer(config.data.tokenizer)
  if not _notes_variant(config):
    return base
  path = pathlib.Path(workdir) / NOTES_FILE if workdir is not None else None
  if path is not None and path.is_file():
    return notes.NotesTokenizer(base, json.loads(path.read_text())["note_vocab"])
  return data_splits(config)[1]
