"""Chat-arena preference data (the LMSYS layout) for pair classifiers.

Each row holds `prompt`, `response_a`, `response_b` (JSON lists of turns, as in
`lmsys/lmsys-arena-human-preference-55k`) and one-hot `winner_model_a`,
`winner_model_b`, `winner_tie`. Rows come from the hub or a local dataset directory
(`hf`), a `.csv`, `.parquet` or `.jsonl` file, or a generated set with a planted rule
(`synthetic`: the longer answer wins, equal lengths tie). Rows with missing fields,
unreadable turn lists, no winner or several winners are counted, skipped and reported.

`encode_pairs` turns examples into fixed-shape int32 arrays: per side
`[CLS] prompt [SEP] response [SEP]` with the prompt cut to `prompt_max_tokens` and the
response (all turns joined) to `response_max_tokens`; with `max_length` the whole side
(special tokens included) is also cut to that many tokens, the prompt first taking what
it needs, as when the original study tokenised prompt + response with max_length=128.

`split_grouped` cuts examples into train / validation / test (default 80/10/10) so that
all rows with the same prompt text land in one split: the same question asked in
several battles must not be seen in training and then scored on.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import math
import pathlib
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import tokenizers
from tqdm import tqdm

from llmjax.models.pair_classifier import A_WINS, B_WINS, TIE
from llmjax.pretrained import encoder_tokenizer as tokenizer
from llmjax.util import errors

TEXT_FIELDS = ("prompt", "response_a", "response_b")
WINNER_FIELDS = ("winner_model_a", "winner_model_b", "winner_tie")
SOURCES = ("hf", "csv", "parquet", "jsonl", "synthetic")
TURN_SEPARATOR = "\n\n"
SYNTHETIC_WORDS = (
  "the cat dog runs blue red house tree water light day night good bad small "
  "big old new car road bird fish song book city river stone cloud green "
  "black white sun"
).split()


class BadRow(ValueError):
  """A row that cannot be used; the message is the reason counted in the report."""


@dataclasses.dataclass(frozen=True)
class Example:
  prompt: str
  response_a: str
  response_b: str
  label: int  # A_WINS, B_WINS or TIE.


@dataclasses.dataclass
class LoadReport:
  """What was read and what was skipped, by reason."""

  origin: str
  rows: int = 0
  kept: int = 0
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  first_bad: list[tuple[int, str]] = dataclasses.field(default_factory=list)

  def __str__(self) -> str:
    text = f"arena {self.origin}: {self.rows:,} rows, {self.kept:,} kept"
    if self.skipped:
      reasons = ", ".join(f"{reason}: {n:,}" for reason, n in self.skipped.most_common())
      first = "; ".join(f"row {i}: {why}" for i, why in self.first_bad)
      text += f", {sum(self.skipped.values()):,} skipped ({reasons}). First: {first}"
    return text


def _missing(value: Any) -> bool:
  return value is None or (isinstance(value, float) and math.isnan(value))


def parse_turns(value: Any, field: str) -> list[str]:
  """A JSON list of turns (or a plain list) as strings; null turns become ''."""
  if _missing(value):
    raise BadRow(f"missing {field}")
  if isinstance(value, str):
    try:
      value = json.loads(value)
    except json.JSONDecodeError:
      raise BadRow(f"{field} is not a JSON list") from None
  if isinstance(value, str):
    return [value]
  if not isinstance(value, (list, tuple)):
    raise BadRow(f"{field} is not a JSON list")
  return ["" if turn is None else str(turn) for turn in value]


def _winner_flag(value: Any, field: str) -> int:
  if _missing(value):
    raise BadRow(f"missing {field}")
  try:
    flag = int(float(value))
  except (TypeError, ValueError):
    raise BadRow(f"{field} is not 0 or 1") from None
  if flag not in (0, 1):
    raise BadRow(f"{field} is not 0 or 1")
  return flag


def parse_row(row: dict[str, Any]) -> Example:
  """An Example from one LMSYS-layout row; raises BadRow with the reason."""
  if not isinstance(row, dict):
    raise BadRow(f"not an object with fields (a {type(row).__name__})")
  texts = [TURN_SEPARATOR.join(parse_turns(row.get(f), f)) for f in TEXT_FIELDS]
  flags = [_winner_flag(row.get(f), f) for f in WINNER_FIELDS]
  if sum(flags) == 0:
    raise BadRow("no winner")
  if sum(flags) > 1:
    raise BadRow("several winners")
  return Example(*texts, label=(A_WINS, B_WINS, TIE)[flags.index(1)])


def parse_rows(rows: Iterable[dict[str, Any]], origin: str) -> tuple[list[Example], LoadReport]:
  report = LoadReport(origin)
  examples = []
  for i, row in enumerate(rows):
    report.rows += 1
    try:
      examples.append(parse_row(row))
    except BadRow as e:
      reason = str(e)
      report.skipped[reason] += 1
      if len(report.first_bad) < 5:
        report.first_bad.append((i, reason))
  report.kept = len(examples)
  return examples, report


def synthetic_tokenizer() -> tokenizers.Tokenizer:
  """A WordPiece tokenizer over the synthetic rows' words (`classifier.tokenizer=synthetic`):
  ids 0-4 are [PAD] [UNK] [CLS] [SEP] [MASK], every word is one token, 36 in all."""
  return tokenizer.wordpiece_from_tokens(
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *SYNTHETIC_WORDS], source="synthetic vocabulary"
  )


def synthetic_rows(
  n: int, seed: int, max_words: int = 24, tie_fraction: float = 0.1, distinct_prompts: int = 0
) -> list[dict[str, Any]]:
  """LMSYS-layout rows where the longer response wins and equal lengths tie.

  Lengths differ by at least 3 words unless tied, so the rule is learnable from text.
  `distinct_prompts` > 0 draws every prompt from that many fixed ones, so prompts repeat
  across rows as in the real data (0: each row gets its own random prompt).
  """
  rng = np.random.default_rng(seed)
  pool_rng = np.random.default_rng([seed, 1])
  pool = [
    " ".join(pool_rng.choice(SYNTHETIC_WORDS, size=int(pool_rng.integers(2, 7))))
    for _ in range(distinct_prompts)
  ]

  def words(k):
    return " ".join(rng.choice(SYNTHETIC_WORDS, size=k))

  rows = []
  for _ in range(n):
    len_a = int(rng.integers(1, max_words + 1))
    if rng.random() < tie_fraction:
      len_b = len_a
    else:
      choices = [k for k in range(1, max_words + 1) if abs(k - len_a) >= 3]
      len_b = int(rng.choice(choices))
    label = A_WINS if len_a > len_b else B_WINS if len_b > len_a else TIE
    prompt = words(int(rng.integers(2, 7)))
    if pool:
      prompt = pool[int(pool_rng.integers(len(pool)))]
    rows.append(
      {
        "prompt": json.dumps([prompt]),
        "response_a": json.dumps([words(len_a)]),
        "response_b": json.dumps([words(len_b)]),
        **{f: int(label == c) for f, c in zip(WINNER_FIELDS, (A_WINS, B_WINS, TIE))},
      }
    )
  return rows


def _read_csv(path: pathlib.Path) -> Iterator[dict[str, Any]]:
  csv.field_size_limit(sys.maxsize)
  with open(path, newline="", encoding="utf-8") as f:
    yield from csv.DictReader(f)


def _read_jsonl(path: pathlib.Path) -> Iterator[dict[str, Any]]:
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        try:
          yield json.loads(line)
        except json.JSONDecodeError:
          yield {}  # Counted as a row with missing fields.


def _read_parquet(path: pathlib.Path) -> Iterator[dict[str, Any]]:
  import pyarrow.parquet as pq  # Imported here: pyarrow (only parquet arena files need it).

  yield from pq.read_table(path).to_pylist()


def _read_hf(path: str, split: str) -> Iterator[dict[str, Any]]:
  import datasets  # Imported here: datasets (heavy; only hub sources need it).

  try:
    rows = datasets.load_dataset(path, split=split)
  except (ConnectionError, OSError, ValueError) as e:
    if pathlib.Path(path).expanduser().exists():
      raise errors.DataError(
        f"arena.path={path!r} could not be read as a dataset: {' '.join(str(e).split())[:300]}"
      ) from None
    raise errors.DownloadError(
      f"arena.path={path!r} could not be loaded from the Hugging Face hub "
      f"({type(e).__name__}: {' '.join(str(e).split())[:200]}). Download it where the hub "
      "is reachable (it is then cached), or export its rows to a file and set "
      "--config.arena.source=csv|jsonl|parquet --config.arena.path=FILE."
    ) from None
  yield from rows


def read_rows(
  source: str,
  path: str,
  split: str = "train",
  *,
  synthetic_n: int = 1000,
  seed: int = 0,
  synthetic_prompts: int = 0,
  synthetic_max_words: int = 24,
) -> Iterator[dict[str, Any]]:
  """Raw rows from `source` (see SOURCES); local files must exist."""
  if source not in SOURCES:
    raise errors.ConfigError(f"arena.source={source!r}; use one of {SOURCES}")
  if source == "synthetic":
    return iter(
      synthetic_rows(
        synthetic_n, seed, max_words=synthetic_max_words, distinct_prompts=synthetic_prompts
      )
    )
  if not path:
    raise errors.ConfigError(
      f"arena.source={source!r} needs arena.path (a file, dataset directory or hub dataset id)"
    )
  if source == "hf":
    return _read_hf(path, split)
  file = pathlib.Path(path).expanduser()
  if not file.is_file():
    raise errors.DataFileNotFoundError(
      f"arena.path {path!r} is not a file (arena.source={source!r}); check the path."
    )
  return {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}[source](file)


def load_examples(
  source: str,
  path: str,
  split: str = "train",
  *,
  max_rows: int = 0,
  synthetic_n: int = 1000,
  seed: int = 0,
  synthetic_prompts: int = 0,
  synthetic_max_words: int = 24,
) -> tuple[list[Example], LoadReport]:
  """Parsed examples and the report of skipped rows."""
  rows = read_rows(
    source,
    path,
    split,
    synthetic_n=synthetic_n,
    seed=seed,
    synthetic_prompts=synthetic_prompts,
    synthetic_max_words=synthetic_max_words,
  )
  if max_rows:
    rows = (row for i, row in zip(range(max_rows), rows))
  origin = f"{source}:{synthetic_n if source == 'synthetic' else path}"
  examples, report = parse_rows(rows, origin)
  if not examples:
    raise errors.DataError(f"No usable rows in {origin}: {report}")
  return examples, report


def encode_pairs(
  examples: list[Example],
  tokenizer: tokenizers.Tokenizer,
  *,
  prompt_max_tokens: int,
  response_max_tokens: int,
  pad_id: int,
  max_length: int = 0,
  show_progress: bool = False,
) -> dict[str, np.ndarray]:
  """Token arrays {ids,mask,types}_{a,b} (NxT int32) and labels (N,).

  T is the longest encoded side, rounded up to a multiple of 8 (at most `max_length`).
  `max_length` > 0 caps each side at that many tokens: the prompt keeps up to
  `max_length` minus the special tokens, the response what is left (possibly nothing).
  `prompt_max_tokens=0` encodes the response alone (`[CLS] response [SEP]`), as the
  original study's first run did.
  """
  response_only = prompt_max_tokens == 0
  specials = tokenizer.num_special_tokens_to_add(not response_only)
  budget = max_length - specials if max_length else 0
  if max_length and budget < 1:
    raise errors.ConfigError(
      f"arena.max_length={max_length} leaves no room for text after "
      f"{max_length - budget} special tokens; use 0 (no cap) or more"
    )
  prompts = tokenizer.encode_batch([e.prompt for e in examples], add_special_tokens=False)
  sides = {}
  for side in ("a", "b"):
    responses = tokenizer.encode_batch(
      [getattr(e, f"response_{side}") for e in examples], add_special_tokens=False
    )
    encoded = []
    for p, r in tqdm(
      zip(prompts, responses),
      total=len(examples),
      disable=not show_progress,
      desc=f"encode side {side}",
      unit="pair",
    ):
      if response_only:
        r.truncate(min(response_max_tokens, budget) if budget else response_max_tokens)
        encoded.append(tokenizer.post_process(r, add_special_tokens=True))
        continue
      p.truncate(min(prompt_max_tokens, budget) if budget else prompt_max_tokens)
      r.truncate(min(response_max_tokens, budget - len(p.ids)) if budget else response_max_tokens)
      encoded.append(tokenizer.post_process(p, r, add_special_tokens=True))
    sides[side] = encoded
  length = max(len(e.ids) for enc in sides.values() for e in enc)
  length = -(-length // 8) * 8
  if max_length:
    length = min(length, max_length)
  out = {"labels": np.asarray([e.label for e in examples], np.int32)}
  for side, encoded in sides.items():
    ids = np.full((len(encoded), length), pad_id, np.int32)
    mask = np.zeros((len(encoded), length), np.int32)
    types = np.zeros((len(encoded), length), np.int32)
    for i, e in enumerate(encoded):
      n = len(e.ids)
      ids[i, :n], mask[i, :n], types[i, :n] = e.ids, e.attention_mask, e.type_ids
    out[f"ids_{side}"], out[f"mask_{side}"], out[f"types_{side}"] = ids, mask, types
  return out


DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
SPLIT_NAMES = ("train", "validation", "test")


def split_fractions(val_fraction: float, test_fraction: float) -> tuple[float, float, float]:
  """(train, val, test) shares from the `arena.val_fraction` / `arena.test_fraction` keys."""
  train = 1.0 - val_fraction - test_fraction
  if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and train > 0):
    raise errors.ConfigError(
      f"arena.val_fraction={val_fraction} and arena.test_fraction={test_fraction} must "
      "leave a training share above 0 (validation in (0, 1), test in [0, 1)); e.g. 0.1 and "
      "0.1 for the 80/10/10 split"
    )
  return train, val_fraction, test_fraction


def split_grouped(
  examples: list[Example], fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Sorted index arrays (train, val, test) into `examples`, grouped by prompt text.

  The distinct prompts are shuffled with `seed` and laid end to end, each taking as many
  slots as it has rows; a prompt goes to the split whose share of the row count holds
  the middle of its run, so split sizes are within one prompt group of the shares.
  A share of 0 gives an empty split; a positive share that receives no prompt (too few
  distinct prompts) is an error.
  """
  fractions = tuple(float(f) for f in fractions)
  if (
    len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6)
  ):
    raise errors.ConfigError(
      f"split fractions {fractions} must be three shares (train, "
      "validation, test) >= 0 that sum to 1, e.g. (0.8, 0.1, 0.1)"
    )
  group_of: dict[str, int] = {}
  group_N = np.asarray([group_of.setdefault(e.prompt, len(group_of)) for e in examples], np.int64)
  sizes_G = np.bincount(group_N, minlength=len(group_of))
  order_G = np.random.default_rng(seed).permutation(len(group_of))
  middle_G = (np.cumsum(sizes_G[order_G]) - sizes_G[order_G] / 2) / max(len(examples), 1)
  split_of_group = np.empty(len(group_of), np.int64)
  split_of_group[order_G] = np.searchsorted(np.cumsum(fractions)[:2], middle_G, side="right")
  split_N = split_of_group[group_N]
  out = tuple(np.flatnonzero(split_N == k) for k in range(3))
  for name, fraction, rows in zip(SPLIT_NAMES, fractions, out):
    if fraction > 0 and not len(rows):
      raise errors.DataError(
        f"{len(examples)} examples with {len(group_of)} distinct prompts give no {name} "
        f"rows for a share of {fraction}; use more rows (arena.max_rows) or a larger "
        "arena.val_fraction / arena.test_fraction"
      )
  return out


@dataclasses.dataclass
class Splits:
  """Encoded arrays of each split (`encode_pairs` layout) and the row indices behind them."""

  train: dict[str, np.ndarray]
  val: dict[str, np.ndarray]
  test: dict[str, np.ndarray]
  rows: dict[str, np.ndarray]  # "train" / "val" / "test" -> indices into the examples.
  report: LoadReport

  def summary(self) -> str:
    n = {k: len(v) for k, v in self.rows.items()}
    return (
      f"{n['train']:,} train / {n['val']:,} validation / {n['test']:,} test pairs "
      f"(no prompt in two splits)"
    )


def prepare_splits(
  ac, tokenizer: tokenizers.Tokenizer, pad_id: int, seed: int, *, show_progress: bool = False
) -> Splits:
  """Loads, encodes and splits the rows the `arena` config section names.

  Reads arena.{source, path, split, max_rows, synthetic_rows, synthetic_prompts,
  synthetic_max_words, val_fraction, test_fraction, prompt_max_tokens,
  response_max_tokens, max_length} (a validated section: every key is there).
  """
  examples, report = load_examples(
    ac.source,
    ac.path,
    ac.split,
    max_rows=ac.max_rows,
    synthetic_n=ac.synthetic_rows,
    seed=seed,
    synthetic_prompts=ac.synthetic_prompts,
    synthetic_max_words=ac.synthetic_max_words,
  )
  fractions = split_fractions(ac.val_fraction, ac.test_fraction)
  rows = dict(zip(("train", "val", "test"), split_grouped(examples, fractions, seed)))
  arrays = encode_pairs(
    examples,
    tokenizer,
    prompt_max_tokens=ac.prompt_max_tokens,
    response_max_tokens=ac.response_max_tokens,
    pad_id=pad_id,
    max_length=ac.max_length,
    show_progress=show_progress,
  )
  take = lambda idx: {k: v[idx] for k, v in arrays.items()}  # noqa: E731
  return Splits(
    train=take(rows["train"]),
    val=take(rows["val"]),
    test=take(rows["test"]),
    rows=rows,
    report=report,
  )


def epoch_steps(train_rows: int, batch_size: int, epochs: int) -> tuple[int, int]:
  """(total steps, steps per epoch) for `epochs` passes over `train_rows` in full batches."""
  per_epoch = train_rows // batch_size
  if per_epoch < 1:
    raise errors.ConfigError(
      f"{train_rows} training pairs do not fill one batch of "
      f"train.batch_size={batch_size}; lower it or use more rows"
    )
  return epochs * per_epoch, per_epoch
