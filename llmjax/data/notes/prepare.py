"""`prepare_notes`: the notes corpus of a run's data section, built once and cached."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import sys
from collections.abc import Iterator

import tqdm

from llmjax.config import schema as config_schema
from llmjax.data import shards, sources
from llmjax.data.notes.corpus import CORPUS_FORMAT, write_corpus, write_streamed_corpus
from llmjax.data.notes.pipelines import load_pipeline, model_id
from llmjax.data.notes.tagging import WordRate
from llmjax.data.notes.weaving import build, tagging_scheme
from llmjax.data.tokenizer import get_tokenizer
from llmjax.util import assets, errors, fileio


def prepare_notes(
  data_cfg, notes_cfg, cache_root: str | os.PathLike[str] | None = None, *, progress: bool = True
) -> shards.TokenSplits:
  """The notes corpus of `data_cfg`'s text, built once and cached.

  Args:
    data_cfg: data config (source, path, tokenizer, val_fraction, ...; see
      the data section of llmjax.config.schema). val_fraction is a share of the words.
    notes_cfg: notes config (the notes section of llmjax.config.schema); variant must be set.
    cache_root: cache root; default `$LLMJAX_CACHE`. The corpus goes to
      `<root>/notes_corpora/<key>/`, the key hashing the text, tokenizer,
      spaCy pipeline, variant, scheme and val_fraction.
    progress: show a progress bar (characters, words/s) while tagging.

  Returns:
    The train/val memmaps, as `shards.load_token_splits` gives them; the
    manifest's `notes` section holds the note vocabulary and counts, and its
    `vocab_size` is the model's vocabulary.
  """
  data_cfg = config_schema.section("data", data_cfg)  # Keys they lack: their defaults.
  notes_cfg = config_schema.section("notes", notes_cfg)
  variant, scheme = notes_cfg.variant, notes_cfg.scheme
  tag_scheme = tagging_scheme(variant, scheme)
  val_fraction = shards.check_val_fraction(data_cfg.val_fraction)
  source = data_cfg.source
  if source not in sources.TEXT_READERS:
    raise errors.ConfigError(
      f"notes.variant={variant!r} makes a notes corpus from a text, but "
      f"data.source={source!r} is not a text source; use one of "
      f"{', '.join(sources.TEXT_READERS)}, or notes.variant='' for plain tokens."
    )
  limit = notes_cfg.limit_chars
  streamed = source == "hf" and data_cfg.hf_streaming
  if streamed:
    src = None
    ident = ["stream"] + [str(data_cfg[k]) for k in ("path", "hf_config", "hf_split", "text_field")]
  else:
    src = sources.read_source(data_cfg)
    if limit and limit < len(src.text):  # Cut after a line end if there is one.
      cut = src.text.rfind("\n", limit // 2, limit) + 1 or limit
      src = dataclasses.replace(src, text=src.text[:cut])
    ident = [src.fingerprint]
  tokenizer = get_tokenizer(data_cfg.tokenizer)
  nlp = load_pipeline(notes_cfg.spacy_model, tag_scheme)
  max_chars = min(notes_cfg.max_chars, nlp.max_length)
  key = hashlib.sha256(
    json.dumps(
      [
        CORPUS_FORMAT,
        *ident,
        limit,
        tokenizer.name,
        tokenizer.fingerprint,
        model_id(nlp),
        variant,
        tag_scheme,
        val_fraction,
        max_chars,
      ]
    ).encode()
  ).hexdigest()[:20]
  root = pathlib.Path(cache_root) if cache_root else assets.cache_dir()
  out = root / "notes_corpora" / key
  if not (out / shards.MANIFEST).is_file():
    tag_kwargs = dict(
      n_process=notes_cfg.n_process, batch_size=notes_cfg.batch_size, max_chars=max_chars
    )
    with (
      fileio.atomic_dir(out, is_complete=_is_corpus) as tmp,
      tqdm.tqdm(
        total=limit if streamed else len(src.text),
        unit="char",
        unit_scale=True,
        desc=f"notes {variant}/{tag_scheme}",
        disable=not progress,
        file=sys.stderr,
      ) as bar,
    ):
      if streamed:
        write_streamed_corpus(
          _stream_docs(data_cfg),
          tmp,
          variant,
          tokenizer,
          notes_cfg.spacy_model,
          scheme,
          limit_chars=limit,
          val_fraction=val_fraction,
          progress=WordRate(bar),
          source=f"hf {data_cfg.path} config={data_cfg.hf_config}"
          f" split={data_cfg.hf_split} (streamed)",
          **tag_kwargs,
        )
      else:
        tagged, stream = build(
          src.text,
          variant,
          tokenizer,
          notes_cfg.spacy_model,
          scheme,
          progress=WordRate(bar),
          **tag_kwargs,
        )
        write_corpus(tmp, tagged, stream, tokenizer, val_fraction=val_fraction)
  return shards.load_token_splits(out)


def _is_corpus(directory: pathlib.Path) -> bool:
  return (directory / shards.MANIFEST).is_file()


def _stream_docs(data_cfg) -> Iterator[str]:
  """The text column of a streamed HF dataset, row by row."""
  field = data_cfg.text_field
  ds = sources.load_hf_dataset(data_cfg.path, data_cfg.hf_config, data_cfg.hf_split, streaming=True)
  for row in ds:
    if field not in row:
      raise errors.DataError(
        f"HF dataset {data_cfg.path!r} has no column "
        f"data.text_field={field!r}; its columns: {list(row)}"
      )
    yield row[field] or ""
