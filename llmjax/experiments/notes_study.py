"""The two notes-corpus experiments: train several variants, score them fairly, report.

Experiment 1 (`config.job = 'notes_experiment'`, configs/notes_experiment.py):
does a language model model language better when its corpus carries
part-of-speech notes (pre or post vs none, with blank as the control for the
extra token slot), and is the note better placed before the word (pre) or after
it (post)? Experiment 2 (`'notes_richness'`, configs/notes_richness.py): post
notes carrying more or less information (blank, upos, tag, tag+morph,
tag+morph+dep), bits per byte against the notes' entropy.

Every run trains with the same seeds and the same budget of original words (or
tokens) seen, then is scored on the same held-out text (the val split of its
corpus: the same words for every variant). The metrics (`fair_metrics`):

  bits per byte   the headline: every emitted token paid at the model's own
                  prediction, notes included, over the UTF-8 bytes of the held-out
                  text; a valid code length of the text, so it cannot leak.
  given gold notes  word bits/byte and word-token perplexity with the gold notes
                  in context, and note accuracy: upper bounds that leak future
                  context for pre and post alike (spaCy tags a word from both
                  sides), reported apart, never used for a verdict.
  words/window    words of context a window of block_size tokens holds.

Each run lives in WORKDIR/<label>-seed<N>; rerunning the same command reuses the
scored row of every finished run (scored.json) and resumes the unfinished one from
its checkpoint.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from llmjax import data as data_lib
from llmjax.data import notes
from llmjax.data import tokenizer as tokenizer_lib
from llmjax.experiments import czech_text, notes_report
from llmjax.runs import load as run_load
from llmjax.train import lm
from llmjax.train.shape import lm_shape
from llmjax.util import errors, fileio

LN2 = math.log(2.0)
EXPERIMENT_1_VARIANTS = ("pre", "post", "blank", "none")
LEVELS = ("blank", "upos", "tag", "tag+morph", "tag+morph+dep")


# --------------------------------------------------------------------------
# Metrics


def fair_metrics(
  ids_N: np.ndarray,
  nll_N: np.ndarray,
  top_N: np.ndarray,
  *,
  base_vocab_size: int,
  n_bytes: int,
  n_words: int,
  block_size: int,
  variant: str,
) -> dict[str, Any]:
  """The fair evaluation of one model on one held-out token stream.

  Args:
    ids_N: [N] the held-out token ids (notes are ids >= base_vocab_size).
    nll_N: [N] the model's negative log-likelihood of each id, in nats.
    top_N: [N] the model's top prediction at each position.
    base_vocab_size: size of the base tokenizer's vocabulary.
    n_bytes: UTF-8 bytes of the held-out text.
    n_words: words in it.
    block_size: the model's context in tokens.
    variant: pre, post, blank or none (note accuracy only for pre and post).

  Returns:
    bits_per_byte, word_bits_per_byte (word tokens only: given gold notes),
    note_bits_per_word, word_ppl_given_notes, note_accuracy (None unless
    pre/post), words_per_window, tokens_per_word, n_tokens, n_notes.
  """
  ids_N = np.asarray(ids_N, np.int64)
  nll_N = np.asarray(nll_N, np.float64)
  top_N = np.asarray(top_N, np.int64)
  if not ids_N.shape == nll_N.shape == top_N.shape or not len(ids_N):
    raise ValueError(
      f"ids, nll and top must be equal-length, non-empty arrays; got shapes "
      f"{ids_N.shape}, {nll_N.shape}, {top_N.shape}."
    )
  if n_bytes < 1 or n_words < 1:
    raise ValueError(f"n_bytes={n_bytes} and n_words={n_words} must be positive.")
  is_word = ids_N < base_vocab_size
  is_note = ~is_word
  accuracy = None
  if variant in ("pre", "post") and is_note.any():
    accuracy = float((top_N[is_note] == ids_N[is_note]).mean())
  return {
    "bits_per_byte": float(nll_N.sum() / LN2 / n_bytes),
    "word_bits_per_byte": float(nll_N[is_word].sum() / LN2 / n_bytes),
    "note_bits_per_word": float(nll_N[is_note].sum() / LN2 / n_words),
    "word_ppl_given_notes": float(np.exp(nll_N[is_word].mean())),
    "note_accuracy": accuracy,
    "words_per_window": float(block_size * n_words / len(ids_N)),
    "tokens_per_word": float(len(ids_N) / n_words),
    "n_tokens": int(len(ids_N)),
    "n_notes": int(is_note.sum()),
  }


def score_tokens(
  model, ids_N: np.ndarray, *, eot_id: int, batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
  """Per-token NLL (nats) and top prediction of `model` on a token stream.

  The stream, preceded by `eot_id` as the start symbol, is cut into windows of
  `model.cfg.block_size` inputs at multiples of block_size, so every id is
  scored exactly once (the first ids of a window see little context, as in any
  non-overlapping evaluation).

  Returns:
    nll_N (float64) and top_N (int64), aligned with ids_N.
  """
  ids_N = np.asarray(ids_N, np.int64)
  n, t = len(ids_N), model.cfg.block_size
  seq = np.concatenate([[eot_id], ids_N, np.full(t, -1)])
  n_windows = -(-n // t)
  n_rows = -(-n_windows // batch_size) * batch_size
  starts = np.arange(n_rows) * t
  index = starts[:, None] + np.arange(t + 1)
  windows = np.where(index < len(seq), seq[np.minimum(index, len(seq) - 1)], -1)
  windows[n_windows:] = -1
  inputs_RxT = np.maximum(windows[:, :-1], 0).astype(np.int32)
  targets_RxT = windows[:, 1:].astype(np.int32)
  graphdef, state = nnx.split(model)

  @jax.jit
  def forward(state, inputs_BxT, targets_BxT):
    logits_BxTxV = nnx.merge(graphdef, state)(inputs_BxT).astype(jnp.float32)
    logp_BxTxV = jax.nn.log_softmax(logits_BxTxV, axis=-1)
    safe_BxT = jnp.maximum(targets_BxT, 0)
    nll_BxT = -jnp.take_along_axis(logp_BxTxV, safe_BxT[..., None], axis=-1)[..., 0]
    return nll_BxT, jnp.argmax(logits_BxTxV, axis=-1)

  nll, top = [], []
  for r in range(0, n_rows, batch_size):
    nll_BxT, top_BxT = forward(
      state, inputs_RxT[r : r + batch_size], targets_RxT[r : r + batch_size]
    )
    nll.append(np.asarray(nll_BxT, np.float64))
    top.append(np.asarray(top_BxT, np.int64))
  return np.concatenate(nll).reshape(-1)[:n], np.concatenate(top).reshape(-1)[:n]


def heldout(corpus_dir: str | pathlib.Path, eval_words: int = 0) -> tuple[np.ndarray, int, int]:
  """The held-out stream of a notes corpus: (ids, n_words, n_bytes).

  `eval_words` > 0 keeps the first that many words (cut at a word boundary, so
  every variant of a text keeps the same text); n_bytes counts the UTF-8 bytes
  of the kept text, decoded from the stream without its notes.
  """
  d = pathlib.Path(corpus_dir)
  splits, manifest = notes.read_corpus(d)
  info = manifest["splits"]["val"]
  ids = np.asarray(splits["val"], np.int64)
  words = np.fromfile(d / info["words_file"], np.uint32)
  n_words = len(words)
  if eval_words and eval_words < n_words:
    ids, n_words = ids[: int(words[eval_words])], int(eval_words)
  base = manifest["notes"]["base_vocab_size"]
  tok = tokenizer_lib.get_tokenizer(manifest["notes"]["base_tokenizer"])
  n_bytes = len(tok.decode(notes.strip_notes(ids, base).tolist()).encode("utf-8"))
  return ids, n_words, n_bytes


# --------------------------------------------------------------------------
# Runs


def _plain(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  out = ml_collections.ConfigDict(config.to_dict())
  if "experiment" in out:
    del out["experiment"]
  out.job = "train"
  return out


def _prepare_text(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
  """Points data at a generated text when `experiment.text` names one."""
  text = config.experiment.get("text", "")
  if not text:
    return
  if text != "czech":
    raise errors.ConfigError(
      f"experiment.text={text!r}: use '' (the data section) or 'czech' (a generated Czech text)."
    )
  path = workdir / "czech.txt"
  if not path.is_file():
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(
      czech_text.czech_text(config.experiment.text_sentences, seed=0), encoding="utf-8"
    )
  config.data.source, config.data.path = "file", str(path)


def budget_steps(unit: str, budget: int, manifest: dict, tokens_per_step: int) -> int:
  """Optimizer steps that show a run `budget` words (or tokens) of its train split."""
  if budget <= 0:
    raise errors.ConfigError(f"experiment.budget={budget} must be positive.")
  if unit == "tokens":
    tokens = budget
  elif unit == "words":
    train = manifest["splits"]["train"]
    tokens = budget * train["n_tokens"] / train["n_words"]
  else:
    raise errors.ConfigError(f"experiment.budget_unit={unit!r}: use 'words' or 'tokens'.")
  return max(1, int(round(tokens / tokens_per_step)))


def _run_configs(
  config: ml_collections.ConfigDict, workdir: pathlib.Path, runs: Sequence[tuple[str, str, str]]
) -> dict[str, Any]:
  """Prepares every run's corpus; returns {label: (config, splits)} with one shared
  vocabulary size, so all models have the same shape."""
  if not config.data.val_fraction:
    raise errors.ConfigError(
      "data.val_fraction=0 leaves no held-out text, and the notes experiments score every "
      "run on held-out text; use e.g. --config.data.val_fraction=0.01."
    )
  prepared = {}
  for label, variant, scheme in runs:
    c = _plain(config)
    c.notes.variant, c.notes.scheme = variant, scheme
    c.model.vocab_size = 1 << 30  # Checked below, once all corpora are known.
    prepared[label] = (c, data_lib.data_splits(c)[0])
  vocab = max(config.model.vocab_size, *(s.manifest["vocab_size"] for _, s in prepared.values()))
  for c, _ in prepared.values():
    c.model.vocab_size = vocab
  return prepared


def train_and_score(
  run_cfg: ml_collections.ConfigDict, splits, run_dir: pathlib.Path, exp: ml_collections.ConfigDict
) -> dict[str, Any]:
  """Trains one run for the experiment's budget, then scores it on held-out text."""
  tc, mc = run_cfg.train, run_cfg.model
  tokens_per_step = lm_shape(run_cfg).per_step
  tc.steps = budget_steps(exp.budget_unit, exp.budget, splits.manifest, tokens_per_step)
  tc.eval_every = max(1, tc.steps // max(exp.evals, 1))
  tc.checkpoint_every = tc.steps
  tc.sample_tokens = 0
  tc.patience = 0
  result = lm.train(run_cfg, run_dir)
  if result.interrupted:
    raise errors.TrainingError(
      f"{run_dir.name} was interrupted at step {result.step} of {tc.steps}; re-run the same "
      "command to resume it (finished runs are kept)."
    )
  score_start = time.perf_counter()
  model, _, _ = run_load.load_model(run_dir, "latest")
  ids, n_words, n_bytes = heldout(splits.dir, exp.eval_words)
  nll, top = score_tokens(
    model, ids, eot_id=splits.manifest["eot_id"], batch_size=exp.eval_batch_size
  )
  notes_manifest = splits.manifest["notes"]
  metrics = fair_metrics(
    ids,
    nll,
    top,
    base_vocab_size=notes_manifest["base_vocab_size"],
    n_bytes=n_bytes,
    n_words=n_words,
    block_size=mc.block_size,
    variant=notes_manifest["variant"],
  )
  train = splits.manifest["splits"]["train"]
  val = splits.manifest["splits"]["val"]
  tokens_per_word = train["n_tokens"] / train["n_words"]
  curve = []
  for record in (
    json.loads(line)
    for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    if line.strip()
  ):
    if "val_loss" in record:
      curve.append(
        {
          "words": record["step"] * tokens_per_step / tokens_per_word,
          "bits_per_byte": record["val_loss"]
          / LN2
          * val["n_tokens"]
          / max(val.get("n_bytes", 0), 1),
        }
      )
  return {
    **metrics,
    "variant": notes_manifest["variant"],
    "scheme": notes_manifest["scheme"],
    "note_entropy": notes_manifest["note_entropy_bits_per_word"],
    "note_vocab": len(notes_manifest["note_vocab"]),
    "seed": tc.seed,
    "steps": result.step,
    "num_params": result.num_params,
    "tokens_seen": result.step * tokens_per_step,
    "words_seen": result.step * tokens_per_step / tokens_per_word,
    "eval_bytes": n_bytes,
    "eval_words": n_words,
    "val_loss": result.final_val_loss,
    "train_s": result.elapsed_s,
    "score_s": time.perf_counter() - score_start,
    "curve": curve,
  }


def _check_same_text(rows: list[dict]) -> None:
  if len({(r["eval_bytes"], r["eval_words"]) for r in rows}) > 1:
    raise errors.DataError(
      "The runs were scored on different held-out texts: "
      f"{sorted({(r['eval_bytes'], r['eval_words']) for r in rows})} "
      "(bytes, words). Use one data section and val_fraction for all."
    )


def _check_experiment(exp) -> None:
  """Fails on a bad budget or seed list before any corpus is tagged."""
  budget_steps(exp.budget_unit, exp.budget, {"splits": {"train": {"n_tokens": 1, "n_words": 1}}}, 1)
  _seeds(exp)


def _seeds(exp) -> list[int]:
  seeds = [int(s) for s in exp.seeds]
  if not seeds:
    raise errors.ConfigError("experiment.seeds is empty; give at least one, e.g. (0,).")
  return seeds


def run_experiment(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Experiment 1: trains each of `experiment.variants` per seed, writes report.md."""
  return _run(
    config,
    workdir,
    "variants",
    EXPERIMENT_1_VARIANTS,
    lambda scheme, v: (v, v, scheme),
    notes_report.write_experiment_report,
  )


def _run(config, workdir, key: str, known: Sequence[str], run_of, write_report) -> dict:
  """Prepares the corpus of every label in `experiment.<key>` (`run_of(scheme, label)` gives
  (label, variant, scheme)), trains and scores each per seed, writes the report."""
  workdir = pathlib.Path(workdir).absolute()
  config = ml_collections.ConfigDict(config.to_dict())
  exp = config.experiment
  _check_experiment(exp)
  _prepare_text(config, workdir)
  labels = list(exp[key])
  unknown = sorted(set(labels) - set(known))
  if unknown:
    raise errors.ConfigError(f"experiment.{key} has {unknown}; use some of {', '.join(known)}.")
  prepared = _run_configs(config, workdir, [run_of(config.notes.scheme, x) for x in labels])
  rows = _train_every_seed(config, workdir, prepared, labels)
  return write_report(workdir, config, rows)


def _train_every_seed(config, workdir: pathlib.Path, prepared: dict, labels) -> list[dict]:
  """Trains and scores each prepared run for every seed of `config.experiment`, in
  DIR/<label>-seed<N> ('+' in a label becomes '_'); one row per run, texts checked equal.

  Rerunning the same command skips every finished run (its summary.json says finished and
  its scored row is in DIR/<run>/scored.json, written atomically) and resumes the
  unfinished one from its checkpoint."""
  rows = []
  for seed in _seeds(config.experiment):
    for label in labels:
      run_dir = workdir / f"{label.replace('+', '_')}-seed{seed}"
      row = finished_row(run_dir)
      if row is None:
        run_cfg, splits = prepared[label]
        run_cfg = ml_collections.ConfigDict(run_cfg.to_dict())
        run_cfg.train.seed = seed
        run_cfg.name = f"{config.name}-{label}-seed{seed}"
        row = {"label": label, **train_and_score(run_cfg, splits, run_dir, config.experiment)}
        fileio.atomic_write_json(run_dir / SCORED, row)
      else:
        print(f"{run_dir.name}: finished earlier; reusing {run_dir / SCORED}", flush=True)
      rows.append(row)
  _check_same_text(rows)
  return rows


SCORED = "scored.json"


def finished_row(run_dir: pathlib.Path) -> dict | None:
  """The scored row of a run that finished in an earlier invocation, else None."""
  try:
    summary = json.loads((run_dir / "summary.json").read_text())
    row = json.loads((run_dir / SCORED).read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return None
  if summary.get("status") != "finished":
    return None
  row.setdefault("train_s", summary.get("elapsed_s", 0.0))  # Rows scored before it was kept.
  return row


def run_richness(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict:
  """Experiment 2: one post-notes model per tag-richness level, writes report.md."""
  return _run(
    config,
    workdir,
    "levels",
    LEVELS,
    lambda _, level: (level, "blank" if level == "blank" else "post", level),
    notes_report.write_richness_report,
  )
