"""Batches of token windows for training (Grain, checkpointable) and evaluation.

Training reads windows of `block_size + 1` ids on a grid of stride `block_size`, shifted
by a seeded offset in [0, block_size) per epoch, so the text is cut at new places every
epoch; the grid's first and last windows are clamped to the text, so every id is a target
at least once per epoch, the first and last ones included (a book's last page is learned
too). With `starts` (e.g. `line_starts`: every token that begins a line) the epoch's
windows are exactly those, with no grid: a model that must continue a line prompt given
alone sees every line at the start of a window, once per epoch, the last lines too (their
windows run past the text, the targets there ignored). Each epoch visits its windows in a
fresh seeded order, epochs repeat forever. Global batch `b` is the same set of windows for
any number of processes; process `shard_index` of `shard_count` loads only its
`batch_size // shard_count` rows of it: rows `r * shard_count + shard_index` of the
global batch.

The iterator's `get_state()` is a small JSON-able dict and `set_state()` restores the
exact position. A memmapped token file is reopened lazily from its path, so neither
the state nor the pickled pipeline (for worker processes) carries the tokens.
"""

from __future__ import annotations

import os
import sys

import grain
import numpy as np
from absl import flags

from llmjax.util import errors

Batch = dict[str, np.ndarray]


def check_length(n_tokens: int, block_size: int, name: str) -> None:
  """Raises unless `n_tokens` ids fit at least one window of `block_size + 1`."""
  if block_size < 1:
    raise errors.DataError(f"block_size={block_size} must be >= 1")
  if n_tokens < block_size + 1:
    raise errors.DataError(
      f"the {name} split has {n_tokens} tokens, fewer than block_size + 1 = "
      f"{block_size + 1} needed for one window; lower the block size (e.g. "
      f"--config.model.block_size={max(1, n_tokens - 1)}), use a longer corpus, or "
      f"(for the val split) raise data.val_fraction"
    )


def _check_sharding(batch_size: int, shard_index: int, shard_count: int) -> int:
  if batch_size < 1:
    raise errors.DataError(f"batch_size={batch_size} must be >= 1")
  if not 0 <= shard_index < shard_count:
    raise errors.DataError(f"shard_index={shard_index} must be in [0, shard_count={shard_count})")
  if batch_size % shard_count:
    raise errors.DataError(
      f"batch_size={batch_size} is the global batch and must be "
      f"divisible by shard_count={shard_count} (the process count)"
    )
  return batch_size // shard_count


def _is_whole_file(tokens: np.ndarray) -> bool:
  """Whether `tokens` is a 1-D memmap of an entire file (so its path describes it)."""
  return (
    isinstance(tokens, np.memmap)
    and tokens.filename is not None
    and tokens.ndim == 1
    and tokens.offset == 0
    and tokens.strides == (tokens.itemsize,)
    and os.path.getsize(tokens.filename) == tokens.nbytes
  )


class WindowLoader:
  """Maps window start offsets [B] to {'inputs', 'targets'}: int32 [B, block_size].

  Holds a memmap by path (reopened on first use after unpickling), other arrays by
  value.
  """

  def __init__(self, tokens: np.ndarray, block_size: int):
    self.block_size = block_size
    self.offsets = np.arange(block_size + 1, dtype=np.int64)
    self.n_tokens = len(tokens)
    self.path = os.fspath(tokens.filename) if _is_whole_file(tokens) else None
    self._tokens = np.asarray(tokens)  # A plain ndarray view is cheaper to index.
    self.dtype = self._tokens.dtype

  def __getstate__(self):
    state = dict(self.__dict__)
    if self.path is not None:
      state["_tokens"] = None
    return state

  @property
  def tokens(self) -> np.ndarray:
    if self._tokens is None:
      self._tokens = np.asarray(
        np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.n_tokens,))
      )
    return self._tokens

  def windows(self, index_B: np.ndarray) -> Batch:
    """Batch of the training windows numbered `index_B` (window i starts at i * T)."""
    return self(np.asarray(index_B, np.int64) * self.block_size)

  def __call__(self, starts_B: np.ndarray) -> Batch:
    """A window that starts less than `block_size + 1` tokens before the end runs past it:
    its targets there are -1 (ignored by the loss; causality keeps the inputs there from
    reaching any target inside the text)."""
    index_BxW = np.asarray(starts_B, np.int64)[:, None] + self.offsets
    past_end = index_BxW >= self.n_tokens
    windows_BxW = self.tokens[np.minimum(index_BxW, self.n_tokens - 1)].astype(np.int32)
    targets_BxT = windows_BxW[:, 1:]
    if past_end.any():
      targets_BxT = np.where(past_end[:, 1:], -1, targets_BxT)
    return {
      "inputs": np.ascontiguousarray(windows_BxW[:, :-1]),
      "targets": np.ascontiguousarray(targets_BxT),
    }


def line_starts(
  tokens: np.ndarray,
  ends_line,
  block_size: int | None = None,
  blank=None,
  slack: int = 8,
) -> np.ndarray:
  """Offsets of the tokens that begin a line: 0 and every token after one for which
  `ends_line(id)` holds (its text ends with a line break); asked once per distinct id.

  With `block_size`, also the windows the sampler moves through when a line is the prompt
  and the model writes the next one (`blank(id)`: a token of whitespace only, so a blank
  line between them is passed over): a sequence longer than the context slides by half a
  block at a time from the prompt's start (`llmjax.inference.generate`), so each line that
  runs, with its successor and `slack` tokens more, past the context also starts a window
  every `block_size // 2` tokens up to there. The end of a line longer than the context is
  trained by these windows too."""
  tokens = np.asarray(tokens)
  breaking = _ids_where(tokens, ends_line)
  after = np.flatnonzero(np.isin(tokens[:-1], breaking)) + 1
  starts = np.unique(np.concatenate([[0], after])).astype(np.int64)
  if block_size is None:
    return starts
  if block_size < 2:
    raise ValueError(f"block_size={block_size} must be at least 2.")
  half = block_size // 2
  bounds = np.append(starts, len(tokens))
  spaces = _ids_where(tokens, blank) if blank else np.zeros(0, tokens.dtype)
  # A line is blank when all its tokens are; `reach[i]`: where line i's successor ends.
  is_blank = [bool(np.isin(tokens[a:b], spaces).all()) for a, b in zip(bounds, bounds[1:])]
  reach, following_end = np.empty(len(starts), np.int64), len(tokens)
  for i in range(len(starts) - 1, -1, -1):
    reach[i] = following_end
    if not is_blank[i]:
      following_end = bounds[i + 1]
  last = len(tokens) - 1  # A window needs a target after its first token.
  windows = [np.arange(s + half, min(e + slack - half, last), half) for s, e in zip(starts, reach)]
  return np.unique(np.concatenate([starts, *windows])).astype(np.int64)


def _ids_where(tokens: np.ndarray, predicate) -> np.ndarray:
  """The distinct ids of `tokens` for which `predicate(id)` holds."""
  return np.asarray([i for i in np.unique(tokens) if predicate(int(i))], tokens.dtype)


def n_train_windows(n_tokens: int, block_size: int) -> int:
  """Windows per epoch: enough grid windows to cover targets 1 .. n_tokens - 1 from any
  shift in [0, block_size), plus the one the shift pushes before the start."""
  return -(-(n_tokens - 1) // block_size) + 1


class TrainBatches:
  """Random access to this process's training batches (a Grain data source).

  With `starts`, window k of every epoch starts at `starts[k]` (at most n_tokens - 2)
  instead; one that ends past the text has its targets there ignored.

  Global element g (g = 0, 1, ...) is window `perm_e[g % W]` of epoch e = g // W, where
  `perm_e` is a seeded permutation of the W windows. Window k of epoch e starts at
  `shift_e + (k - 1) * T`, clamped to [0, n_tokens - T - 1], with a seeded `shift_e` in
  [0, T): the clamped first and last windows overlap their neighbours, and every id is a
  target in every epoch. Global batch b holds elements b*B .. b*B + B - 1, of which this
  process takes every `shard_count`-th from `shard_index`. Indices are computed vectorised
  per batch.
  """

  def __init__(
    self,
    tokens: np.ndarray,
    block_size: int,
    batch_size: int,
    seed: int,
    shard_index: int,
    shard_count: int,
    starts: np.ndarray | None = None,
  ):
    check_length(len(tokens), block_size, "train")
    self.local_batch = _check_sharding(batch_size, shard_index, shard_count)
    if not 0 <= seed < 2**32:
      raise errors.DataError(f"seed={seed} must be in [0, 2**32)")
    self.loader = WindowLoader(tokens, block_size)
    self.last_start = len(tokens) - block_size - 1
    self.starts = None
    if starts is not None:
      # Near the end a window keeps its start and runs past the text (see WindowLoader):
      # a line there is still trained on from its own first token.
      self.starts = np.unique(np.clip(np.asarray(starts, np.int64), 0, len(tokens) - 2))
      if not len(self.starts):
        raise errors.DataError("starts is empty: give at least one window start")
    self.n_windows = (
      len(self.starts) if self.starts is not None else n_train_windows(len(tokens), block_size)
    )
    self.seed, self.batch_size = seed, batch_size
    self.shard_index, self.shard_count = shard_index, shard_count
    self._perms: dict[int, np.ndarray] = {}

  def __getstate__(self):
    return {**self.__dict__, "_perms": {}}

  def __len__(self) -> int:
    return sys.maxsize

  def shift(self, epoch: int) -> int:
    """The offset of epoch `epoch`'s window grid."""
    return int(np.random.default_rng([self.seed, epoch, 1]).integers(0, self.loader.block_size))

  def permutation(self, epoch: int) -> np.ndarray:
    """The window order of `epoch`."""
    perm = self._perms.get(epoch)
    if perm is None:
      rng = np.random.default_rng([self.seed, epoch])
      perm = rng.permutation(self.n_windows)
      self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
      self._perms[epoch] = perm
    return perm

  def window_starts(self, index: int) -> np.ndarray:
    """Token offsets of the windows of this process's rows of global batch `index`."""
    g_B = (
      index * self.batch_size
      + self.shard_index
      + self.shard_count * np.arange(self.local_batch, dtype=np.int64)
    )
    epoch_B, pos_B = np.divmod(g_B, self.n_windows)
    first, last = int(epoch_B[0]), int(epoch_B[-1])
    out = np.empty_like(g_B)
    for epoch in range(first, last + 1):  # A batch may straddle epoch boundaries.
      sel = epoch_B == epoch
      if self.starts is not None:
        out[sel] = self.starts[self.permutation(epoch)[pos_B[sel]]]
        continue
      grid = self.shift(epoch) + (self.permutation(epoch)[pos_B[sel]] - 1) * self.loader.block_size
      out[sel] = np.clip(grid, 0, self.last_start)
    return out

  def __getitem__(self, index: int) -> Batch:
    return self.loader(self.window_starts(index))


def train_dataset(
  tokens: np.ndarray,
  block_size: int,
  batch_size: int,
  seed: int,
  *,
  shard_index: int = 0,
  shard_count: int = 1,
  starts: np.ndarray | None = None,
) -> grain.MapDataset:
  """The endless `MapDataset` behind `train_iterator` (element i = local batch i)."""
  return grain.MapDataset.source(
    TrainBatches(tokens, block_size, batch_size, seed, shard_index, shard_count, starts)
  )


def train_iterator(
  tokens: np.ndarray,
  block_size: int,
  batch_size: int,
  seed: int,
  *,
  shard_index: int = 0,
  shard_count: int = 1,
  worker_count: int = 0,
  starts: np.ndarray | None = None,
) -> grain.DatasetIterator:
  """Endless training batches of this process: {'inputs', 'targets'} int32 [B/S, T].

  Args:
    tokens: the training ids (a memmap from `prepare_tokens`, or any 1-D array).
    block_size: sequence length T.
    batch_size: the global batch size B (over all processes).
    seed: shuffle seed in [0, 2**32).
    shard_index: this process's index (`jax.process_index()`).
    shard_count: number of processes (`jax.process_count()`).
    worker_count: 0 loads in this process; > 0 uses that many Grain worker processes
      (needs a `__main__` guard in the launching script).
    starts: the window starts of every epoch (default: the shifted grid).

  Returns:
    A Grain `DatasetIterator`; `get_state()`/`set_state()` save and restore it exactly.
  """
  ds = train_dataset(
    tokens,
    block_size,
    batch_size,
    seed,
    shard_index=shard_index,
    shard_count=shard_count,
    starts=starts,
  )
  iter_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
  if worker_count > 0:
    if not flags.FLAGS.is_parsed():  # Grain workers read absl flags; use defaults.
      flags.FLAGS.mark_as_parsed()
    iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(iter_ds)


def eval_starts(n_tokens: int, block_size: int, n_windows: int) -> np.ndarray:
  """`n_windows` window starts spread evenly from the first to the last possible one."""
  last = n_tokens - (block_size + 1)
  return np.round(np.linspace(0, last, n_windows)).astype(np.int64)


def eval_batches(
  tokens: np.ndarray,
  block_size: int,
  batch_size: int,
  n_batches: int,
  *,
  shard_index: int = 0,
  shard_count: int = 1,
) -> list[Batch]:
  """The same `n_batches` evaluation batches on every call, for this process.

  Windows are evenly spaced over the whole split (overlapping when the split is
  short). With several processes each gets its rows of every global batch, as in
  `train_iterator`.
  """
  check_length(len(tokens), block_size, "val")
  local_batch = _check_sharding(batch_size, shard_index, shard_count)
  if n_batches < 1:
    raise errors.DataError(f"n_batches={n_batches} must be >= 1")
  starts = eval_starts(len(tokens), block_size, batch_size * n_batches)
  loader = WindowLoader(tokens, block_size)
  starts_NxB = starts.reshape(n_batches, batch_size)
  return [loader(row[shard_index::shard_count][:local_batch]) for row in starts_NxB]
