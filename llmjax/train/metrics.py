"""metrics.jsonl writing (one JSON object per logged step) and small statistics."""

from __future__ import annotations

import json
import math
import os
import pathlib

import numpy as np


class MetricsWriter:
  """Appends JSON lines to DIR/metrics.jsonl; on resume, drops lines past the restored step
  so the file reads exactly as if the run had never stopped.

  The rewrite on resume is atomic, and a last line torn by a killed process is dropped.
  """

  def __init__(self, workdir: str | pathlib.Path, *, resume_step: int | None, enabled: bool = True,
               filename: str = "metrics.jsonl"):
    self.path = pathlib.Path(workdir) / filename
    self.enabled = enabled
    if not enabled:
      return
    kept = []
    if resume_step is not None and self.path.exists():
      kept = [line for line in self.path.read_text().splitlines()
              if _parses(line) and json.loads(line).get("step", 0) <= resume_step]
    tmp = self.path.with_name(self.path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, self.path)
    self._file = self.path.open("a")

  def write(self, record: dict) -> None:
    if not self.enabled:
      return
    clean = {k: (float(v) if isinstance(v, (np.floating, np.integer)) and not isinstance(
        v, (bool, np.bool_)) else v) for k, v in record.items()}
    self._file.write(json.dumps(clean, sort_keys=True) + "\n")
    self._file.flush()

  def close(self) -> None:
    if self.enabled:
      self._file.close()


def _parses(line: str) -> bool:
  try:
    return isinstance(json.loads(line), dict)
  except json.JSONDecodeError:
    return False


def read_metrics(workdir: str | pathlib.Path) -> list[dict]:
  path = pathlib.Path(workdir) / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def unigram_entropy(tokens: np.ndarray) -> float:
  """Entropy in nats of the token unigram distribution: the loss of a model that ignores
  context entirely. A useful reference line for validation loss."""
  counts = np.bincount(np.asarray(tokens, dtype=np.int64))
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log(p)).sum())


def perplexity(loss: float) -> float:
  return math.exp(min(loss, 50.0))


def bytes_per_token(tokens: np.ndarray, tokenizer, max_tokens: int = 2_000_000) -> float:
  """UTF-8 bytes of text per token id (over at most the first `max_tokens` ids): converts a
  loss in nats per token into bits per byte, `loss / ln 2 / bytes_per_token`."""
  ids = np.asarray(tokens[:max_tokens])
  if len(ids) == 0:
    return float("nan")
  return len(tokenizer.decode(ids).encode("utf-8")) / len(ids)


def bits_per_byte(loss: float, bytes_per_tok: float) -> float:
  return loss / math.log(2) / bytes_per_tok


def write_summary(workdir: str | pathlib.Path, summary: dict) -> pathlib.Path:
  """Writes DIR/summary.json atomically (what the report reads for each run)."""
  path = pathlib.Path(workdir) / "summary.json"
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
  tmp.replace(path)
  return path
