"""Tests for llmjax.data.pipeline."""

import json
import pickle

import numpy as np
import pytest

from llmjax.data import pipeline, shards
from llmjax.data import tokenizer as tokenizer_lib
from llmjax.inference import generate, recitation


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    np.testing.assert_array_equal(a["targets"], b["targets"])


@pytest.fixture
def memmap_tokens(tmp_path):
  """10_001 ids 0..10000 (uint16) in a token directory, opened as a memmap."""
  shards.write_token_shards(["x"], tmp_path, "char", progress=False)
  ids = np.arange(10_001, dtype=np.uint16)
  ids.tofile(tmp_path / "train.bin")
  return shards.open_tokens(tmp_path / "train.bin", np.uint16, len(ids))


def test_batch_shapes_and_windows():
  tokens = np.arange(41, dtype=np.uint16)  # T=4: 11 windows per epoch, grid shift in [0, 3].
  it = pipeline.train_iterator(tokens, block_size=4, batch_size=5, seed=0)
  batch = next(it)
  assert batch["inputs"].shape == batch["targets"].shape == (5, 4)
  assert batch["inputs"].dtype == batch["targets"].dtype == np.int32
  np.testing.assert_array_equal(batch["targets"], batch["inputs"] + 1)
  starts = batch["inputs"][:, 0]
  np.testing.assert_array_equal(batch["inputs"], starts[:, None] + np.arange(4))
  assert pipeline.n_train_windows(41, 4) == 11


def epoch_starts(source, epoch, n_windows):
  """The sorted window starts of one epoch, computed from the documented rule."""
  shift, t, last = source.shift(epoch), source.loader.block_size, source.last_start
  return sorted(min(max(shift + (k - 1) * t, 0), last) for k in range(n_windows))


def test_every_epoch_covers_every_target_on_a_moving_grid():
  tokens = np.arange(41, dtype=np.uint16)
  source = pipeline.TrainBatches(tokens, 4, 5, seed=0, shard_index=0, shard_count=1)
  it = pipeline.train_iterator(tokens, block_size=4, batch_size=5, seed=0)
  batches = take(it, 11)  # 55 windows = 5 epochs of 11.
  starts = np.concatenate([b["inputs"][:, 0] for b in batches])
  targets = np.concatenate([b["targets"] for b in batches])
  epochs = [starts[i * 11 : (i + 1) * 11] for i in range(5)]
  for e, epoch in enumerate(epochs):
    assert sorted(epoch.tolist()) == epoch_starts(source, e, 11)
    # Every id but the first is a target in every epoch: the ends of the text too.
    assert set(targets[e * 11 : (e + 1) * 11].ravel().tolist()) == set(range(1, 41))
  assert epochs[0].tolist() != epochs[1].tolist() != epochs[2].tolist()
  assert len({source.shift(e) for e in range(5)}) > 1  # The grid moves between epochs.


def test_a_book_s_last_tokens_are_trained_on():
  """A short text whose length leaves a remainder: its tail is in every epoch."""
  tokens = np.arange(2738, dtype=np.uint16)
  n_windows = pipeline.n_train_windows(2738, 64)
  it = pipeline.train_iterator(tokens, block_size=64, batch_size=n_windows, seed=3)
  for _ in range(4):  # One batch = one epoch.
    assert set(next(it)["targets"].ravel().tolist()) == set(range(1, 2738))


def test_line_starts_are_the_tokens_after_a_line_break():
  # Ids 9 and 7 end a line ("\n", ".\n"); the text starts a line too.
  tokens = np.asarray([1, 2, 9, 3, 4, 5, 7, 6, 9, 9, 2], np.uint16)
  starts = pipeline.line_starts(tokens, lambda i: i in (7, 9))
  assert starts.tolist() == [0, 3, 7, 9, 10]


def test_line_windows_start_every_line_once_per_epoch():
  tokens = np.arange(200, dtype=np.uint16)
  # A window of 9 ids from 195 runs past the end; 199 (no target after it) moves to 198.
  starts = np.asarray([0, 17, 40, 41, 90, 150, 195, 199])
  it = pipeline.train_iterator(tokens, block_size=8, batch_size=8, seed=0, starts=starts)
  for _ in range(3):  # 8 distinct windows = one batch an epoch.
    batch = next(it)
    first = batch["inputs"][:, 0]
    assert sorted(first.tolist()) == [0, 17, 40, 41, 90, 150, 195, 198]
    inside = first < 190
    np.testing.assert_array_equal(batch["targets"][inside], batch["inputs"][inside] + 1)
    by_start = dict(zip(first.tolist(), batch["targets"].tolist()))
    assert by_start[195] == [196, 197, 198, 199, -1, -1, -1, -1]  # -1: ignored by the loss.
    assert by_start[198] == [199] + [-1] * 7
  a = take(pipeline.train_iterator(tokens, 8, 8, seed=0, starts=starts), 2)
  b = take(pipeline.train_iterator(tokens, 8, 8, seed=1, starts=starts), 2)
  assert a[0]["inputs"][:, 0].tolist() != b[0]["inputs"][:, 0].tolist()  # Seeded order.


def test_seeds():
  tokens = np.arange(1001, dtype=np.uint16)
  a = take(pipeline.train_iterator(tokens, 8, 4, seed=1), 3)
  b = take(pipeline.train_iterator(tokens, 8, 4, seed=1), 3)
  c = take(pipeline.train_iterator(tokens, 8, 4, seed=2), 3)
  assert_same(a, b)
  assert a[0]["inputs"].tolist() != c[0]["inputs"].tolist()


@pytest.mark.parametrize("n_before", [5, 2])
def test_state_restores_exactly(n_before):
  # 10 windows, batch 4: epochs end inside batches 2, 4, 7, ... (crossed by both cases).
  tokens = np.arange(41, dtype=np.uint16)
  it = pipeline.train_iterator(tokens, 4, 4, seed=3)
  take(it, n_before)
  state = it.get_state()
  assert json.loads(json.dumps(state)) == state
  after = take(it, 3)
  it.set_state(state)
  assert_same(take(it, 3), after)
  fresh = pipeline.train_iterator(tokens, 4, 4, seed=3)
  fresh.set_state(state)
  assert_same(take(fresh, 3), after)


def test_state_across_epoch_boundary_matches_uninterrupted():
  tokens = np.arange(41, dtype=np.uint16)
  straight = take(pipeline.train_iterator(tokens, 4, 4, seed=3), 8)
  it = pipeline.train_iterator(tokens, 4, 4, seed=3)
  first = take(it, 5)
  state = it.get_state()
  resumed = pipeline.train_iterator(tokens, 4, 4, seed=3)
  resumed.set_state(state)
  assert_same(first + take(resumed, 3), straight)
  # 11 windows per epoch: batch 2 holds elements 8..11, the last three of epoch 0 and
  # the first of epoch 1.
  epoch0 = np.concatenate(
    [b["inputs"][:, 0] for b in straight[:2]] + [straight[2]["inputs"][:3, 0]]
  )
  source = pipeline.TrainBatches(tokens, 4, 4, seed=3, shard_index=0, shard_count=1)
  assert sorted(epoch0.tolist()) == epoch_starts(source, 0, 11)


@pytest.mark.parametrize("shard_count", [2, 4])
def test_shards_partition_each_global_batch(shard_count):
  tokens = np.arange(10 * 8 + 1, dtype=np.uint16)  # 10 windows of T=8.
  single = take(pipeline.train_iterator(tokens, 8, 8, seed=5), 4)
  local = [
    take(pipeline.train_iterator(tokens, 8, 8, seed=5, shard_index=k, shard_count=shard_count), 4)
    for k in range(shard_count)
  ]
  for b in range(4):
    assert local[0][b]["inputs"].shape == (8 // shard_count, 8)
    rebuilt = np.empty((8, 8), np.int32)
    for k in range(shard_count):
      rebuilt[k::shard_count] = local[k][b]["inputs"]
    np.testing.assert_array_equal(rebuilt, single[b]["inputs"])


def test_memmap_is_not_pickled(memmap_tokens):
  ds = pipeline.train_dataset(memmap_tokens, 16, 4, seed=0)
  blob = pickle.dumps(ds)
  assert len(blob) < 5_000  # The 20 kB of tokens stay on disk.
  assert str(memmap_tokens.filename).encode() in blob
  clone = pickle.loads(blob)
  np.testing.assert_array_equal(clone[7]["inputs"], ds[7]["inputs"])
  it = pipeline.train_iterator(memmap_tokens, 16, 4, seed=0)
  assert_same(take(it, 2), [ds[0], ds[1]])


def test_memmap_slice_is_held_by_value(memmap_tokens):
  part = memmap_tokens[100:]
  batch = pipeline.train_iterator(part, 16, 4, seed=0).__next__()
  assert batch["inputs"].min() >= 100
  loader = pipeline.WindowLoader(part, 16)
  assert loader.path is None


def test_errors():
  tokens = np.arange(8, dtype=np.uint16)
  with pytest.raises(
    ValueError,
    match=r"the train split has 8 tokens, fewer than "
    r"block_size \+ 1 = 9.*block_size=7",
  ):
    pipeline.train_iterator(tokens, 8, 2, seed=0)
  with pytest.raises(ValueError, match=r"the val split has 8 tokens.*data\.val_fraction"):
    pipeline.eval_batches(tokens, 8, 2, 1)
  with pytest.raises(ValueError, match=r"batch_size=6 .* divisible by shard_count=4"):
    pipeline.train_iterator(np.arange(100), 8, 6, seed=0, shard_count=4)
  with pytest.raises(ValueError, match=r"shard_index=2 must be in \[0, shard_count=2\)"):
    pipeline.train_iterator(np.arange(100), 8, 4, seed=0, shard_index=2, shard_count=2)
  with pytest.raises(ValueError, match=r"seed=-1"):
    pipeline.train_iterator(np.arange(100), 8, 4, seed=-1)
  # Exactly one window is enough.
  batch = next(pipeline.train_iterator(np.arange(9), 8, 2, seed=0))
  np.testing.assert_array_equal(batch["inputs"], [np.arange(8)] * 2)


def test_eval_batches_are_fixed_and_spread():
  tokens = np.arange(1001, dtype=np.uint16)
  batches = pipeline.eval_batches(tokens, 10, 4, 3)
  assert len(batches) == 3 and batches[0]["inputs"].shape == (4, 10)
  starts = np.concatenate([b["inputs"][:, 0] for b in batches])
  np.testing.assert_array_equal(starts, np.round(np.linspace(0, 990, 12)))
  assert batches[-1]["targets"][-1, -1] == 1000  # The last window ends the split.
  assert_same(pipeline.eval_batches(tokens, 10, 4, 3), batches)
  halves = [pipeline.eval_batches(tokens, 10, 4, 3, shard_index=k, shard_count=2) for k in range(2)]
  for b in range(3):
    rebuilt = np.empty((4, 10), np.int32)
    rebuilt[0::2], rebuilt[1::2] = halves[0][b]["inputs"], halves[1][b]["inputs"]
    np.testing.assert_array_equal(rebuilt, batches[b]["inputs"])


def test_eval_batches_on_short_split_overlap():
  batches = pipeline.eval_batches(np.arange(12, dtype=np.uint16), 10, 2, 2)
  starts = [b["inputs"][:, 0].tolist() for b in batches]
  assert starts == [[0, 0], [1, 1]]  # round(linspace(0, 1, 4))


def test_worker_processes_give_the_same_batches(memmap_tokens):
  reference = take(pipeline.train_iterator(memmap_tokens, 16, 4, seed=0), 6)
  it = pipeline.train_iterator(memmap_tokens, 16, 4, seed=0, worker_count=1)
  try:
    first = take(it, 3)
    state = it.get_state()
    rest = take(it, 3)
    it.set_state(state)
    again = take(it, 3)
  finally:
    it.close()
  assert_same(first + rest, reference)
  assert_same(again, rest)


def test_a_line_running_past_the_context_starts_a_window_every_half_block():
  # Lines start at 0, 3 and 20 (ids 9 end a line); the line at 3 is 17 tokens long.
  tokens = np.asarray([1, 2, 9] + [5] * 16 + [9] + [6] * 4, np.uint16)
  assert pipeline.line_starts(tokens, lambda i: i == 9).tolist() == [0, 3, 20]
  starts = pipeline.line_starts(tokens, lambda i: i == 9, block_size=8, slack=4)
  # Line 0 and its successor end at 20: windows at 4, 8, 12, 16; line 3 and its successor
  # reach the end: 7, 11, 15, 19 (23, the last token, has no target).
  assert starts.tolist() == [0, 3, 4, 7, 8, 11, 12, 15, 16, 19, 20]
  # Lines that fit the context with their successor add nothing.
  short = np.asarray([1, 2, 9] * 10, np.uint16)
  assert pipeline.line_starts(short, lambda i: i == 9, block_size=16).tolist() == list(
    range(0, 30, 3)
  )


def test_a_blank_line_is_passed_over_to_the_next_line():
  # "aaaaa\n" "\n" "bbbbb\n" "ccc": the first line's successor is the b line.
  tokens = np.asarray([1] * 5 + [9, 9] + [2] * 5 + [9] + [3] * 3, np.uint16)
  newline = lambda i: i == 9  # noqa: E731
  with_blank = pipeline.line_starts(tokens, newline, block_size=8, blank=newline, slack=4)
  assert with_blank.tolist() == [0, 4, 6, 7, 8, 10, 11, 12, 13]
  plain = pipeline.line_starts(tokens, newline, block_size=8, slack=4)
  assert plain.tolist() == [0, 4, 6, 7, 10, 11, 13]


def test_line_windows_hold_every_context_the_sampler_uses_to_recite():
  text = "".join(
    f"{'word ' * (3 + 7 * i % 23)}line {i}.\n" + ("\n" if i % 4 == 3 else "") for i in range(30)
  )
  tok = tokenizer_lib.get_tokenizer("char")
  tokens = np.asarray(tok.encode(text), np.uint16)
  block = 32
  starts = set(
    pipeline.line_starts(
      tokens,
      lambda i: tok.decode([i]).endswith("\n"),
      block_size=block,
      blank=lambda i: not tok.decode([i]).strip(),
    ).tolist()
  )
  offset, slid = 0, 0
  for line, following in recitation.tail_pairs(text, 1.0):
    offset = text.index(line + "\n", offset)
    budget = len(tok.encode("\n" + following)) + 4  # As `recitation.recite` asks.
    blank_lines = len(following) - len(following.lstrip("\n"))
    for prompt in (line, line + "\n" * (blank_lines + 1)):
      for start, _ in generate.context_windows(len(tok.encode(prompt)), budget, block):
        assert offset + start in starts, (line, start)
        slid += start > 0
  assert slid > 20  # Long lines do slide.
