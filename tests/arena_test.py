"""Arena data: LMSYS rows from CSV / parquet / jsonl / a dataset directory, bad-row
reports, pair encoding, the synthetic planted rule, and the classification metrics."""

import collections
import csv
import json

import numpy as np
import pytest
import tokenizers

from llmjax.config import load as config_load
from llmjax.config import validate as config_validate
from llmjax.data import arena
from llmjax.experiments import arena_sets
from llmjax.pretrained.encoder_tokenizer import wordpiece_from_vocab
from llmjax.util import errors

GOOD = {
  "prompt": '["Hi there", "And then?"]',
  "response_a": '["Hello!", null]',
  "response_b": '["Hey"]',
  "winner_model_a": 0,
  "winner_model_b": 1,
  "winner_tie": 0,
}
BAD = [
  ({**GOOD, "prompt": None}, "missing prompt"),
  ({k: v for k, v in GOOD.items() if k != "response_b"}, "missing response_b"),
  ({**GOOD, "response_a": "[unclosed"}, "response_a is not a JSON list"),
  ({**GOOD, "winner_model_b": 0}, "no winner"),
  ({**GOOD, "winner_tie": 1}, "several winners"),
  ({**GOOD, "winner_model_b": 2}, "winner_model_b is not 0 or 1"),
]


def test_parse_row_joins_turns_and_labels():
  ex = arena.parse_row(GOOD)
  assert ex == arena.Example("Hi there\n\nAnd then?", "Hello!\n\n", "Hey", label=1)
  assert arena.parse_row({**GOOD, "winner_model_b": "0", "winner_tie": "1.0"}).label == 2


def test_bad_rows_are_counted_and_reported():
  rows = [GOOD] + [row for row, _ in BAD] + [GOOD, {**GOOD, "winner_tie": 1}]
  examples, report = arena.parse_rows(rows, "test")
  assert len(examples) == 2 and (report.rows, report.kept) == (9, 2)
  want = {reason: 1 for _, reason in BAD}
  want["several winners"] = 2
  assert dict(report.skipped) == want
  assert report.first_bad[0] == (1, "missing prompt") and len(report.first_bad) == 5
  text = str(report)
  assert text.startswith("arena test: 9 rows, 2 kept, 7 skipped (several winners: 2, ")
  assert "First: row 1: missing prompt; row 2: missing response_b" in text


def _rows():
  return arena.synthetic_rows(20, seed=3) + [row for row, _ in BAD[:2]]


@pytest.mark.parametrize("source", ["csv", "jsonl", "parquet", "hf"])
def test_file_sources_agree(tmp_path, source):
  rows = _rows()
  fields = list(GOOD)
  if source in ("csv", "hf"):
    directory = tmp_path / "ds"
    directory.mkdir()
    path = directory / "train.csv"
    with open(path, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=fields)
      writer.writeheader()
      writer.writerows(rows)
    if source == "hf":
      path = directory
  elif source == "jsonl":
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
  else:
    import pyarrow as pa  # pylint: disable=import-outside-toplevel
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

    path = tmp_path / "rows.parquet"
    table = {f: [r.get(f) for r in rows] for f in fields}
    pq.write_table(pa.table(table), path)
  examples, report = arena.load_examples(source, str(path))
  want, _ = arena.parse_rows(arena.synthetic_rows(20, seed=3), "x")
  assert examples == want
  assert report.kept == 20 and sum(report.skipped.values()) == 2 + (source == "jsonl")


def test_missing_file_and_unknown_source():
  with pytest.raises(FileNotFoundError, match="arena.path 'nope.csv' is not a file"):
    arena.load_examples("csv", "nope.csv")
  with pytest.raises(ValueError, match="arena.source='xls'"):
    arena.load_examples("xls", "a.xls")
  with pytest.raises(ValueError, match="No usable rows in jsonl:.*(missing prompt|not an object)"):
    arena.load_examples("jsonl", __file__)  # Python, not JSON lines: every row is bad.


def test_synthetic_rows_follow_the_planted_rule():
  examples, _ = arena.parse_rows(arena.synthetic_rows(300, seed=0), "synthetic")
  for e in examples:
    la, lb = len(e.response_a.split()), len(e.response_b.split())
    assert e.label == (0 if la > lb else 1 if lb > la else 2)
    assert la == lb or abs(la - lb) >= 3
  counts = np.bincount([e.label for e in examples], minlength=3)
  assert counts.min() > 10


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> tokenizers.Tokenizer:
  path = tmp_path_factory.mktemp("tok") / "vocab.txt"
  path.write_text(
    "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *arena.SYNTHETIC_WORDS]) + "\n"
  )
  return wordpiece_from_vocab(path)


def test_encode_pairs_layout_and_truncation(tokenizer):
  examples = [
    arena.Example("the cat dog runs", "blue red house tree water", "day", 0),
    arena.Example("sun", "night", "good bad", 2),
  ]
  out = arena.encode_pairs(
    examples, tokenizer, prompt_max_tokens=2, response_max_tokens=3, pad_id=0
  )
  v = tokenizer.token_to_id
  cls, sep = v("[CLS]"), v("[SEP]")
  assert out["ids_a"].shape == (2, 8) and out["ids_a"].dtype == np.int32  # 8 = 2 + 3 + 3
  np.testing.assert_array_equal(
    out["ids_a"][0], [cls, v("the"), v("cat"), sep, v("blue"), v("red"), v("house"), sep]
  )
  np.testing.assert_array_equal(out["types_a"][0], [0, 0, 0, 0, 1, 1, 1, 1])
  np.testing.assert_array_equal(
    out["ids_b"][1], [cls, v("sun"), sep, v("good"), v("bad"), sep, 0, 0]
  )
  np.testing.assert_array_equal(out["mask_b"][1], [1, 1, 1, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(out["labels"], [0, 2])


def _repeated_prompt_examples(seed: int, distinct: int) -> list:
  """Rows in shuffled order whose prompts are each asked 1 to 6 times."""
  rng = np.random.default_rng(seed)
  prompts = rng.permutation(np.repeat(np.arange(distinct), rng.integers(1, 7, distinct)))
  return [
    arena.Example(f"prompt {p}", f"a{i}", f"b{i}", int(rng.integers(3)))
    for i, p in enumerate(prompts)
  ]


@pytest.mark.parametrize("fractions", [(0.8, 0.1, 0.1), (0.6, 0.3, 0.1), (0.9, 0.1, 0.0)])
def test_split_grouped_never_shares_a_prompt(fractions):
  for seed in range(40):
    examples = _repeated_prompt_examples(seed, distinct=30 + 7 * seed)
    n = len(examples)
    splits = arena.split_grouped(examples, fractions, seed=seed)
    np.testing.assert_array_equal(np.sort(np.concatenate(splits)), np.arange(n))
    prompts = [{examples[i].prompt for i in rows} for rows in splits]
    assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])
    # Each split is within one prompt group of its share (the group straddling a boundary).
    largest = max(collections.Counter(e.prompt for e in examples).values())
    for rows, share in zip(splits, fractions):
      assert abs(len(rows) - share * n) <= largest
      assert list(rows) == sorted(rows)
    if fractions[2] == 0:
      assert len(splits[2]) == 0
    again = arena.split_grouped(examples, fractions, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(splits, again))


def test_split_grouped_on_synthetic_rows_and_errors():
  examples, _ = arena.parse_rows(arena.synthetic_rows(400, seed=0, distinct_prompts=60), "s")
  assert len({e.prompt for e in examples}) == 60
  train, val, test = arena.split_grouped(examples, seed=0)
  assert (len(train), len(val), len(test)) == (317, 40, 43)
  assert arena.split_fractions(0.1, 0.1) == pytest.approx((0.8, 0.1, 0.1))
  with pytest.raises(
    errors.ConfigError,
    match="arena.val_fraction=0.5 and arena.test_fraction=0.5 must leave a training share",
  ):
    arena.split_fractions(0.5, 0.5)
  with pytest.raises(errors.ConfigError, match="sum to 1"):
    arena.split_grouped(examples, (0.8, 0.1, 0.2))
  same_prompt = [arena.Example("p", "a", "b", 0)] * 5
  with pytest.raises(
    errors.DataError, match="5 examples with 1 distinct prompts give no validation rows"
  ):
    arena.split_grouped(same_prompt)
  # The default synthetic rows keep their old, unrepeated prompts.
  assert arena.synthetic_rows(5, seed=3) == arena.synthetic_rows(5, seed=3, distinct_prompts=0)


def test_encode_pairs_response_only_reads_no_prompt(tokenizer):
  # prompt_max_tokens=0: the original's first run, [CLS] response [SEP] per side.
  examples = [
    arena.Example("the cat dog runs", "blue red house tree water", "day", 0),
    arena.Example("sun", "night", "good bad", 2),
  ]
  out = arena.encode_pairs(
    examples, tokenizer, prompt_max_tokens=0, response_max_tokens=3, pad_id=0, max_length=4
  )
  v = tokenizer.token_to_id
  cls, sep = v("[CLS]"), v("[SEP]")
  assert out["ids_a"].shape == (2, 4)
  np.testing.assert_array_equal(out["ids_a"][0], [cls, v("blue"), v("red"), sep])
  np.testing.assert_array_equal(out["ids_b"][0], [cls, v("day"), sep, 0])
  np.testing.assert_array_equal(out["ids_b"][1], [cls, v("good"), v("bad"), sep])
  np.testing.assert_array_equal(out["types_a"][0], [0, 0, 0, 0])


def test_run1_variant_is_the_originals_first_run():
  c = config_load.load_config("configs/arena_classifier.py:run1")
  config_validate.validate(c)
  assert c.classifier.init_from == "distilbert-base-uncased"
  assert (c.arena.prompt_max_tokens, c.arena.response_max_tokens, c.arena.max_length) == (
    0,
    510,
    512,
  )
  assert (c.train.batch_size, c.arena.epochs, c.optim.learning_rate) == (32, 3, 1e-5)
  assert c.classifier.pooling == "cls" and not c.classifier.diff_prod
  smoke = config_load.load_config("configs/arena_classifier.py:run1,smoke")
  config_validate.validate(smoke)
  assert smoke.arena.prompt_max_tokens == 0 and smoke.arena.source == "synthetic"
  with pytest.raises(errors.ConfigError, match="run1 is one run"):
    config_load.load_config("configs/arena_classifier.py:run1,set1")


def test_negative_prompt_tokens_are_refused():
  c = config_load.load_config("configs/arena_classifier.py:smoke").unlock()
  c.arena.prompt_max_tokens = -1
  with pytest.raises(errors.ConfigError, match=r"arena.prompt_max_tokens=-1: must be >= 0"):
    config_validate.validate(c)


def test_encode_pairs_max_length_lets_the_prompt_go_first(tokenizer):
  examples = [
    arena.Example("the cat dog runs", "blue red house tree water", "day", 0),
    arena.Example("sun", "night", "good bad", 2),
  ]
  out = arena.encode_pairs(
    examples, tokenizer, prompt_max_tokens=50, response_max_tokens=50, pad_id=0, max_length=7
  )
  v = tokenizer.token_to_id
  cls, sep = v("[CLS]"), v("[SEP]")
  assert out["ids_a"].shape == (2, 7)  # Not rounded up to 8 past max_length.
  # Four prompt tokens leave no room for the response within 7 - 3 specials.
  np.testing.assert_array_equal(
    out["ids_a"][0], [cls, v("the"), v("cat"), v("dog"), v("runs"), sep, sep]
  )
  np.testing.assert_array_equal(out["ids_b"][1], [cls, v("sun"), sep, v("good"), v("bad"), sep, 0])
  with pytest.raises(errors.ConfigError, match="arena.max_length=3 leaves no room"):
    arena.encode_pairs(
      examples, tokenizer, prompt_max_tokens=5, response_max_tokens=5, pad_id=0, max_length=3
    )


def test_prepare_splits_from_the_smoke_set_config():
  c = config_load.load_config("configs/arena_classifier.py:set1,smoke")
  splits = arena.prepare_splits(c.arena, arena.synthetic_tokenizer(), pad_id=0, seed=0)
  n = {k: len(v) for k, v in splits.rows.items()}
  assert sum(n.values()) == c.arena.synthetic_rows == 1200
  assert abs(n["val"] - 120) <= 6 and abs(n["test"] - 120) <= 6
  examples, _ = arena.load_examples(
    "synthetic", "", synthetic_n=1200, seed=0, synthetic_prompts=300, synthetic_max_words=8
  )
  prompts = {k: {examples[i].prompt for i in rows} for k, rows in splits.rows.items()}
  assert not (
    prompts["train"] & prompts["test"]
    or prompts["val"] & prompts["test"]
    or prompts["train"] & prompts["val"]
  )
  assert splits.test["ids_a"].shape == (n["test"], 14)  # arena.max_length
  np.testing.assert_array_equal(
    splits.test["labels"], [examples[i].label for i in splits.rows["test"]]
  )
  assert "no prompt in two splits" in splits.summary()
  assert arena.epoch_steps(n["train"], 32, 3) == (3 * (n["train"] // 32), n["train"] // 32)
  with pytest.raises(errors.ConfigError, match="20 training pairs do not fill one batch"):
    arena.epoch_steps(20, 32, 3)


def _result(model, mode, accuracy, confusion=None):
  return {
    "model": model,
    "mode": mode,
    "params": 66_955_779,
    "trainable_params": 2_307,
    "accuracy": accuracy,
    "accuracy_ci95": [accuracy - 0.013, accuracy + 0.012],
    "log_loss": 1.0432,
    "seconds_per_epoch": 61.25,
    "confusion": confusion,
  }


def test_arena_set_table_and_confusion_png(tmp_path):
  results = [
    _result("distilbert", "frozen", 0.4531, [[5, 2, 1], [1, 6, 0], [2, 2, 1]]),
    _result("my-encoder", "full", 0.5, [[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
  ]
  table = arena_sets.format_table(results).splitlines()
  assert table[0].startswith("| model | mode | parameters | trainable | test accuracy [95% ")
  assert table[2] == (
    "| distilbert | frozen | 66.96M | 2.3K | 45.3% [44.0, 46.5] | 1.0432 | 61.2 | 45.3% |"
  )
  assert table[3].endswith("| 61.2 |  |")  # No original figure for this run.
  paths = arena_sets.write_report(results, tmp_path / "out", title="set 1")
  assert paths["markdown"].read_text().startswith("## set 1\n\n| model |")
  assert json.loads(paths["json"].read_text())[0]["confusion"][0] == [5, 2, 1]
  assert paths["confusion"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  with pytest.raises(ValueError, match=r"result 0 \(distilbert, frozen\) lacks \['log_loss'\]"):
    arena_sets.format_table([{k: v for k, v in results[0].items() if k != "log_loss"}])
  no_confusion = arena_sets.write_report([_result("a", "full", 0.4)], tmp_path / "plain")
  assert "confusion" not in no_confusion


def test_arena_set_configs_and_runs(tmp_path):
  c = config_load.load_config("configs/arena_classifier.py:set1")
  config_validate.validate(c)
  assert (c.classifier.pooling, c.classifier.diff_prod, c.arena.max_length) == ("cls", False, 128)
  assert (c.train.batch_size, c.arena.epochs, c.optim.learning_rate) == (32, 3, 1e-5)
  assert (c.arena.val_fraction, c.arena.test_fraction, c.optim.min_lr_ratio) == (0.1, 0.1, 1.0)
  runs = arena_sets.run_configs(c)
  assert [(r.label, r.checkpoint, r.mode) for r, _ in runs] == [
    ("distilbert", "distilbert-base-uncased", "random"),
    ("distilbert", "distilbert-base-uncased", "full"),
    ("distilbert", "distilbert-base-uncased", "frozen"),
    ("distilbert", "distilbert-base-uncased", "bottom_frozen"),
  ]
  assert [rc.classifier.freeze for _, rc in runs] == ["random", "full", "frozen", "bottom_frozen"]
  assert all(rc.arena.runs == "" and rc.optim.learning_rate == 1e-5 for _, rc in runs)
  checkpoints = {
    name: [
      r.checkpoint
      for r, _ in arena_sets.run_configs(
        config_load.load_config(f"configs/arena_classifier.py:{name}")
      )
    ]
    for name in ("set2", "set3")
  }
  assert checkpoints == {
    "set2": ["distilbert-base-uncased", "bert-base-uncased", "bert-large-uncased"],
    "set3": [
      "roberta-base",
      "google/electra-base-discriminator",
      "microsoft/deberta-base",
      "albert-base-v2",
    ],
  }
  smoke = config_load.load_config("configs/arena_classifier.py:set3,smoke")
  for run, rc in arena_sets.run_configs(smoke):
    assert (arena_sets.GOLDENS / run.label.replace("-", "_")).samefile(rc.classifier.init_from)
  with pytest.raises(errors.ConfigError, match="'gpt:full': unknown encoder 'gpt'"):
    arena_sets.parse_runs("gpt:full")
  with pytest.raises(errors.ConfigError, match="must read label\\[@checkpoint\\]:mode"):
    arena_sets.parse_runs("bert:half")
  with pytest.raises(ValueError, match="set1 fixes its own encoders"):
    config_load.load_config("configs/arena_classifier.py:set1,bert")

  seen = []

  def fake_train(config, workdir):
    seen.append((config.classifier.init_from, config.classifier.freeze, workdir.name))
    return {k: v for k, v in _result("", "", 0.4).items() if k not in ("model", "mode")}

  small = config_load.load_config("configs/arena_classifier.py:set2").unlock()
  small.arena.runs = "distilbert:full,tiny@/nowhere:random"
  paths = arena_sets.run_set(small, tmp_path, fake_train)
  assert seen == [
    ("distilbert-base-uncased", "full", "distilbert-full"),
    ("/nowhere", "random", "tiny-random"),
  ]
  rows = json.loads(paths["json"].read_text())
  assert [(r["model"], r["mode"]) for r in rows] == [("distilbert", "full"), ("tiny", "random")]
