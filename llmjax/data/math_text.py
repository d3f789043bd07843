"""Math text streamed from HF datasets into a token directory (`data.source='math'`).

`data.path` lists datasets, comma-separated (default: both of `DEFAULT_DATASETS`); each
entry is a hub id, a local data file / directory (what `sources.load_hf_dataset`
accepts), or `generated`: exercises with worked solutions made on the spot
(`llmjax.data.generated_math`), for offline runs. Rows are streamed, never downloaded
whole, so `data.max_tokens` must cap the corpus, and every dataset gets its own share of
it (`data.mix`, equal shares by default): one dataset of gigabytes cannot use up the cap
before the next is read. A dataset that runs out before its share leaves the rest unused
(the manifest's `per_dataset` says how many tokens each gave).

Of each dataset's share, the first `data.val_fraction` (whole documents, the last one
cut) goes to the validation split; after skipping the few documents left in that
tokenizer batch, the following documents fill the rest of the share in the training
split. The splits hold the datasets in `data.path`'s order, `eot_id` between documents;
training windows are drawn from the whole split in a shuffled order, so the datasets are
mixed within every epoch (a run that read them one after the other, and the loss bump of
the switch, is not reproduced). With `data.val_fraction` 0 all tokens are trained on and
validation reads the training split. The directory is cached under
`$LLMJAX_CACHE/tokens/math-<key>` keyed on datasets, shares, split, field, tokenizer and
sizes.

  python -m llmjax.cli.math_tokens 2000000   # tokenise 2M tokens of the default datasets
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

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


def token_budgets(ids, mix: str, max_tokens: int) -> tuple[int, ...]:
  """Each dataset's share of `max_tokens` from the weights `mix` ("" = equal shares);
  the shares add up to `max_tokens` exactly."""
  if str(mix or "").strip():
    try:
      weights = [float(w) for w in str(mix).split(",")]
    except ValueError:
      weights = []
    if len(weights) != len(ids) or not all(w > 0 for w in weights):
      raise errors.ConfigError(
        f"data.mix={mix!r} must give one positive weight per dataset of data.path "
        f"({len(ids)}: {', '.join(ids)}), comma-separated, e.g. "
        f"--config.data.mix={','.join(['1'] * len(ids))}."
      )
  else:
    weights = [1.0] * len(ids)
  edges = [int(round(max_tokens * sum(weights[:i]) / sum(weights))) for i in range(len(ids) + 1)]
  budgets = tuple(b - a for a, b in zip(edges, edges[1:]))
  if min(budgets) < 2:
    raise errors.ConfigError(
      f"data.max_tokens={max_tokens} with data.mix={mix!r} leaves a dataset of "
      f"{', '.join(ids)} fewer than 2 tokens; raise data.max_tokens."
    )
  return budgets


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


def cache_key(ids, split, field, tokenizer, max_tokens, val_fraction, budgets) -> str:
  ident = json.dumps(
    [
      shards.FORMAT_VERSION,
      "math",
      list(ids),
      list(budgets),
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
  budgets = token_budgets(ids, data_cfg.mix, max_tokens)
  tokenizer = get_tokenizer(data_cfg.tokenizer)
  key = cache_key(ids, split, field, tokenizer, max_tokens, val_fraction, budgets)
  root = Path(cache_root) if cache_root is not None else assets.cache_dir()
  out = root / "tokens" / f"math-{key}"
  if shards.is_token_dir(out):
    return shards.load_token_splits(out)
  with shards.staging_dir(out) as tmp:
    per_dataset = []
    for i, (dataset_id, budget) in enumerate(zip(ids, budgets)):
      counts = _write_dataset(
        dataset_id, budget, i, val_fraction, tmp, tokenizer, split, field, progress
      )
      per_dataset.append({"dataset": dataset_id, "budget": budget, **counts})
    manifest = _join_parts(tmp, tokenizer, len(ids))
    manifest.setdefault("n_val", 0)
    manifest.update(
      source=f"math {','.join(ids)} split={split} field={field}",
      datasets=list(ids),
      per_dataset=per_dataset,
      max_tokens=max_tokens,
      val_fraction=val_fraction,
      key=key,
    )
    (tmp / shards.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
  return shards.load_token_splits(out)


def _write_dataset(
  dataset_id, budget, index, val_fraction, tmp, tokenizer, split, field, progress
) -> dict:
  """Writes one dataset's share: `val.<index>.bin` (its first documents) and
  `train.<index>.bin`; returns their token counts."""
  docs = iter_documents([dataset_id], split, field)
  n_val = max(1, int(round(val_fraction * budget))) if val_fraction else 0
  counts = {}
  if n_val:
    # Small batches: the rest of the batch that crosses the cap is skipped, not trained on.
    counts["val"] = shards.write_token_shards(
      docs,
      tmp,
      tokenizer,
      split=f"val.{index}",
      max_tokens=n_val,
      docs_per_batch=8,
      progress=progress,
    )["n_tokens"]
  try:
    counts["train"] = shards.write_token_shards(
      docs,
      tmp,
      tokenizer,
      split=f"train.{index}",
      max_tokens=budget - n_val,
      progress=progress,
    )["n_tokens"]
  except errors.DataError as e:
    if not n_val:
      raise
    raise errors.DataError(
      f"math dataset {dataset_id!r} ran out after its validation share ({n_val} tokens): "
      "nothing left to train on; lower data.val_fraction or give it a larger share "
      "(data.max_tokens, data.mix)."
    ) from e
  return counts


def _join_parts(tmp: Path, tokenizer, n_parts: int) -> dict:
  """Joins the datasets' `<split>.<i>.bin` into `<split>.bin`, `eot_id` between them."""
  manifest = json.loads((tmp / shards.MANIFEST).read_text())
  parts = manifest["splits"]
  eot = np.asarray([tokenizer.eot_id], tokenizer.dtype).tobytes()
  for name, key in (("val", "n_val"), ("train", "n_train")):
    names = [f"{name}.{i}" for i in range(n_parts) if f"{name}.{i}" in parts]
    if not names:
      continue
    if len(names) == 1:  # One dataset: its part is the split, no copy.
      (tmp / parts[names[0]]["file"]).rename(tmp / f"{name}.bin")
    else:
      with open(tmp / f"{name}.bin", "wb") as out:
        for j, part in enumerate(names):
          if j:
            out.write(eot)
          with open(tmp / parts[part]["file"], "rb") as f:
            shutil.copyfileobj(f, out)
          (tmp / parts[part]["file"]).unlink()
    entries = [parts.pop(part) for part in names]
    n_tokens = sum(e["n_tokens"] for e in entries) + len(entries) - 1
    parts[name] = {
      "file": f"{name}.bin",
      "n_tokens": n_tokens,
      "n_docs": sum(e["n_docs"] for e in entries),
    }
    manifest[key] = n_tokens
  return manifest
