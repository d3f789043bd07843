"""DeBERTa's relative positions: the (query - key) distance matrix, log-bucketed."""

from __future__ import annotations

import numpy as np


def log_bucket_positions(rel_pos: np.ndarray, bucket_size: int, max_position: int) -> np.ndarray:
  """DeBERTa's log buckets: distances beyond bucket_size // 2 grow logarithmically.

  Computed in float32 exactly as the reference does, so the bucket edges agree.
  """
  rel_pos = np.asarray(rel_pos, np.int64)
  mid = bucket_size // 2
  inside = (rel_pos < mid) & (rel_pos > -mid)
  abs_pos = np.where(inside, mid - 1, np.abs(rel_pos))
  ratio = abs_pos.astype(np.float32) / np.float32(mid)
  denom = np.log(np.float32((max_position - 1) / mid))
  log_pos = np.ceil(np.log(ratio) / denom * np.float32(mid - 1)) + np.float32(mid)
  bucket = np.where(abs_pos <= mid, rel_pos.astype(np.float32), log_pos * np.sign(rel_pos))
  return bucket.astype(np.int64)


def relative_positions(length: int, bucket_size: int, max_position: int) -> np.ndarray:
  """TxT matrix of (query position - key position), log-bucketed when bucket_size > 0."""
  ids = np.arange(length)
  rel_TxT = ids[:, None] - ids[None, :]
  if bucket_size > 0 and max_position > 0:
    rel_TxT = log_bucket_positions(rel_TxT, bucket_size, max_position)
  return rel_TxT
