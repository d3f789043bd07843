"""Math text streamed from HF datasets into a token directory (`data.source='math'`).

`data.path` lists datasets, comma-separated, read one after the other (default: both of
`DEFAULT_DATASETS`); each entry is a hub id, a local data file / directory (what
`sources.load_hf_dataset` accepts), or `generated`: exercises with worked solutions made
on the spot (`llmjax.data.generated_math`), for offline runs. Rows are streamed, never downloaded whole, so
`data.max_tokens` must cap the corpus. The first `data.val_fraction` of those tokens
(whole documents, the last one cut) become the validation split; after skipping the few
documents left in that tokenizer batch, the following documents form the training split;
`eot_id` separates documents. With `data.val_fraction` 0 all tokens are trained on and
validation reads the training split. The directory is cached under
`$LLMJAX_CACHE/tokens/math-<key>` keyed on datasets, split, field, tokenizer and sizes.

  python -m llmjax.cli.math_tokens 2000000   # tokenise 2M tokens of the default datasets
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from llmjax.config import schema as config_schema
from llmjax.data import generated_math, shards, sources
from llmjax.data.tokenizer import get_tokenizer
from llmjax.util import assets, errors

DEFAULT_DATASETS = ("ajibawa-2023/Maths-College", "open-web-math/open-web-math")
# Columns joined (in this order) when a row has no `data.text_field` column, e.g. the
# question/answer layouts of instruction-style math sets.
FALLBACK_FIELDS = (
  "prompt",
  "instruction",
  "question",
  "input",
  "text",
  "output",
  "response",
  "answer",
)


def dataset_ids(path: str) -> tuple[str, ...]:
  ids = tuple(p.strip() for p in str(path or "").split(",") if p.strip())
  return ids or DEFAULT_DATASETS


def row_text(row: dict, field: str) -> str | None:
  """The row's text: its `field` column, else its question/answer columns joined."""
  value = row.get(field)
  if isinstance(value, str):
    return value
  parts = [row[k] for k in FALLBACK_FIELDS if isinstance(row.get(k), str) and row[k].strip()]
  return "\n\n".join(parts) or None


def iter_documents(ids, split: str = "train", field: str = "text") -> Iterator[str]:
  """Streams the documents of each dataset in turn."""
  for dataset_id in ids:
    if dataset_id == generated_math.NAME:
      yield from generated_math.documents(seed=0)
      continue
    n_rows = n_docs = 0
    for row in sources.load_hf_dataset(dataset_id, "", split, streaming=True):
      n_rows += 1
      text = row_text(row, field)
      if text and not text.isspace():
        n_docs += 1
        yield text
    if n_rows and not n_docs:
      raise errors.DataError(
        f"math dataset {dataset_id!r} has no text in column "
        f"data.text_field={field!r} nor in any of {FALLBACK_FIELDS}; set "
        "--config.data.text_field to its text column."
      )


def cache_key(ids, split, field, tokenizer, max_tokens, val_fraction) -> str:
  ident = json.dumps(
    [
      shards.FORMAT_VERSION,
      "math",
      list(ids),
      split,
      field,
      tokenizer.name,
      tokenizer.fingerprint,
      int(max_tokens),
      float(val_fraction),
    ]
  )
  return hashlib.sha256(ident.encode()).hexdigest()[:20]


def prepare_math_tokens(
  data_cfg, cache_root: str | os.PathLike[str] | None = None, *, progress: bool = True
) -> shards.TokenSplits:
  """Train/val token memmaps of the math datasets `data_cfg` names (built once, cached)."""
  data_cfg = config_schema.section("data", data_cfg)  # Keys it lacks: their defaults.
  max_tokens = data_cfg.max_tokens
  if max_tokens <= 0:
    raise errors.ConfigError(
      "data.source='math' streams open-ended corpora: set "
      "data.max_tokens, e.g. --config.data.max_tokens=20000000."
    )
  val_fraction = shards.check_val_fraction(data_cfg.val_fraction)
  ids = dataset_ids(data_cfg.path)
  split, field = data_cfg.hf_split, data_cfg.text_field
  tokenizer = get_tokenizer(data_cfg.tokenizer)
  key = cache_key(ids, split, field, tokenizer, max_tokens, val_fraction)
  root = Path(cache_root) if cache_root is not None else assets.cache_dir()
  out = root / "tokens" / f"math-{key}"
  if shards.is_token_dir(out):
    return shards.load_token_splits(out)
  n_val = max(1, int(round(val_fraction * max_tokens))) if val_fraction else 0
  with shards.staging_dir(out) as tmp:
    docs = iter_documents(ids, split, field)
    if n_val:
      # Small batches: the rest of the batch that crosses the cap is skipped, not trained on.
      shards.write_token_shards(
        docs, tmp, tokenizer, split="val", max_tokens=n_val, docs_per_batch=8, progress=progress
      )
    try:
      shards.write_token_shards(
        docs, tmp, tokenizer, split="train", max_tokens=max_tokens - n_val, progress=progress
      )
    except errors.DataError as e:
      if not n_val:
        raise
      raise errors.DataError(
        f"math datasets {list(ids)} ran out after the validation "
        f"split ({n_val} tokens): nothing left to train on; lower "
        "data.max_tokens or data.val_fraction."
      ) from e
    manifest = json.loads((tmp / shards.MANIFEST).read_text())
    manifest.setdefault("n_val", 0)
    manifest.update(
      source=f"math {','.join(ids)} split={split} field={field}",
      datasets=list(ids),
      max_tokens=max_tokens,
      val_fraction=val_fraction,
      key=key,
    )
    (tmp / shards.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
  return shards.load_token_splits(out)
