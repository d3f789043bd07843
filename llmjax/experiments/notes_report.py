"""report.md, results.json and PNG plots of the notes experiments (llmjax.experiments.notes_study)."""

from __future__ import annotations

import pathlib
import statistics
from collections.abc import Sequence
from typing import Any

import ml_collections

from llmjax.util import fileio
from llmjax.util import markdown as md

# (row key, column title, format) of the experiment-1 headline table: nothing in it leaks.
COLUMNS_1 = (
  ("bits_per_byte", "bits/byte of the original text (model's own notes)", "{:.4f}"),
  ("note_bits_per_word", "note bits/word", "{:.3f}"),
  ("words_per_window", "words/window", "{:.1f}"),
  ("tokens_per_word", "tokens/word", "{:.3f}"),
  ("words_seen", "words seen", "{:,.0f}"),
  ("steps", "steps", "{:,.0f}"),
)
# Figures conditioned on the gold notes: upper bounds that leak future context.
COLUMNS_1_GOLD = (
  ("word_bits_per_byte", "word bits/byte given gold notes", "{:.4f}"),
  ("word_ppl_given_notes", "word-token ppl given gold notes", "{:.3f}"),
  ("note_accuracy", "note accuracy", "{:.1%}"),
)
COLUMNS_2 = (
  ("note_entropy", "note entropy (bits/word)", "{:.3f}"),
  ("note_vocab", "notes", "{:,.0f}"),
  ("bits_per_byte", "bits/byte of the original text (model's own notes)", "{:.4f}"),
  ("note_bits_per_word", "note bits/word (model)", "{:.3f}"),
  ("words_seen", "words seen", "{:,.0f}"),
)
COLUMNS_2_GOLD = (
  ("word_bits_per_byte", "word bits/byte given gold notes", "{:.4f}"),
  ("word_ppl_given_notes", "word-token ppl given gold notes", "{:.3f}"),
)
LEAK_NOTE = (
  "Upper bounds, not results: these figures condition each word on the gold notes, and "
  "spaCy's tagger reads context on both sides of a word, so a gold note (pre or post, and "
  "richer notes more) carries information about the words after it. No verdict is drawn "
  "from this table."
)
HEADLINE_NOTE = (
  "*bits/byte of the original text*: every token the model emits is paid at the model's own "
  "prediction, notes included, over the UTF-8 bytes of the held-out text. The notes are "
  "part of the code, so whatever a note reveals about later words has been paid for: this "
  "is a valid code length of the text that cannot leak, and the figure every verdict uses."
)


def aggregate(rows: Sequence[dict], labels: Sequence[str]) -> dict[str, dict[str, Any]]:
  """{label: {key: (mean, std or None, n)}} over the seeds of each label."""
  out = {}
  for label in labels:
    group = [r for r in rows if r["label"] == label]
    stats = {}
    for key, value in group[0].items():
      if isinstance(value, bool) or not isinstance(value, (int, float)) and value is not None:
        continue
      values = [r[key] for r in group if r.get(key) is not None]
      if not values:
        stats[key] = (None, None, 0)
        continue
      std = statistics.stdev(values) if len(values) > 1 else None
      stats[key] = (statistics.fmean(values), std, len(values))
    out[label] = stats
  return out


def fmt(stat: tuple, pattern: str) -> str:
  mean, std, _ = stat
  if mean is None:
    return "–"
  text = pattern.format(mean)
  if std is not None:
    text += " ± " + pattern.format(std).lstrip("+")
  return text


def table(agg: dict, columns: Sequence[tuple[str, str, str]], first: str) -> str:
  return md.table(
    [first] + [title for _, title, _ in columns],
    (
      [label] + [fmt(stats.get(key, (None, None, 0)), pattern) for key, _, pattern in columns]
      for label, stats in agg.items()
    ),
  )


NO_DIFFERENCE = "no difference"
FINDING = "finding"
ONE_SEED = "one seed"


def verdict_kind(a: tuple, b: tuple) -> str:
  """The 2-sigma rule on two (mean, sd, n) figures: FINDING when the means differ by more
  than twice the spread of the difference, sqrt(sd_a^2 + sd_b^2); NO_DIFFERENCE when
  within it; ONE_SEED when either side has no seed-to-seed spread."""
  (ma, sa, _), (mb, sb, _) = a, b
  if sa is None or sb is None:
    return ONE_SEED
  return FINDING if abs(ma - mb) > 2 * (sa**2 + sb**2) ** 0.5 else NO_DIFFERENCE


def verdict(a: tuple, b: tuple, name_a: str, name_b: str) -> str:
  """One sentence comparing bits/byte of a and b (lower is better), by the 2-sigma rule."""
  (ma, sa, na), (mb, sb, nb) = a, b
  diff = ma - mb
  better = name_a if diff < 0 else name_b
  text = (
    f"{name_a} {ma:.4f} vs {name_b} {mb:.4f} bits/byte: difference {diff:+.4f} "
    f"({abs(diff) / mb:.1%})"
  )
  kind = verdict_kind(a, b)
  if kind == ONE_SEED:
    return text + " (one seed: no seed-to-seed spread, so no verdict)."
  spread = (sa**2 + sb**2) ** 0.5
  if kind == FINDING:
    return (
      text + f"; beyond twice the seed spread ({2 * spread:.4f}, {min(na, nb)} seeds): "
      f"finding, {better} lower."
    )
  return (
    text + f"; within twice the seed spread ({2 * spread:.4f}, {min(na, nb)} seeds): no difference."
  )


def _plot(path: pathlib.Path, draw) -> None:
  import matplotlib  # Imported here: matplotlib (plots only; slow to import).

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # Imported here: matplotlib (plots only; slow to import).

  fig = draw(plt)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _curves(rows: Sequence[dict], title: str):
  def draw(plt):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    seeds: dict[str, list[str]] = {}
    for row in rows:
      seeds.setdefault(row["label"], []).append(str(row["seed"]))
    colors = {label: f"C{i}" for i, label in enumerate(seeds)}
    labelled = set()
    for row in rows:  # One colour per variant; its seeds share it and one legend entry.
      if row["curve"]:
        label = row["label"]
        ax.plot(
          [p["words"] for p in row["curve"]],
          [p["bits_per_byte"] for p in row["curve"]],
          marker="o",
          ms=3,
          alpha=0.8,
          color=colors[label],
          label=None if label in labelled else f"{label} (seeds {', '.join(seeds[label])})",
        )
        labelled.add(label)
    ax.set_xlabel("original words seen")
    ax.set_ylabel("validation bits/byte (trainer's eval windows)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig

  return draw


def _bars(agg: dict, keys: Sequence[tuple[str, str]]):
  def draw(plt):
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.6))
    labels = list(agg)
    for ax, (key, title) in zip(axes, keys):
      means = [agg[l][key][0] if agg[l][key][0] is not None else 0.0 for l in labels]
      stds = [agg[l][key][1] or 0.0 for l in labels]
      ax.bar(labels, means, yerr=stds, capsize=3, color="tab:blue")
      ax.set_title(title, fontsize=9)
      ax.tick_params(axis="x", labelrotation=30, labelsize=8)
      lo = min((m for m in means if m), default=0.0)
      if key != "note_accuracy" and lo:
        ax.set_ylim(lo * 0.95, max(means) * 1.02)
    return fig

  return draw


def _setup(config: ml_collections.ConfigDict, rows: Sequence[dict]) -> str:
  exp = config.experiment
  r = rows[0]
  return (
    f"- config `{config.name}`; data `{config.data.source}` "
    f"{config.data.path or ''} (tokenizer `{config.data.tokenizer}`"
    + (f", first {config.notes.limit_chars:,} characters" if config.notes.limit_chars else "")
    + f"); spaCy `{config.notes.spacy_model}`\n"
    f"- model: {r['num_params'] / 1e6:.2f}M parameters ({config.model.n_layer} layers, width "
    f"{config.model.n_embd}, context {config.model.block_size} tokens), identical for "
    f"every run\n"
    f"- budget: {exp.budget:,} {exp.budget_unit} of the training text per run, batch "
    f"{config.train.batch_size} x {config.model.block_size}; seeds "
    f"{', '.join(str(s) for s in exp.seeds)}\n"
    f"- held-out text: {r['eval_words']:,} words, {r['eval_bytes']:,} bytes, the same for "
    f"every run (the start of each corpus's val split)\n" + _compute(rows)
  )


def _compute(rows: Sequence[dict]) -> str:
  """The time the runs took, from what each recorded."""
  text = (
    f"- compute: {_minutes(sum(x.get('train_s', 0.0) for x in rows))} of training "
    "(evaluations included)"
  )
  if all("score_s" in x for x in rows):
    text += f" and {_minutes(sum(x['score_s'] for x in rows))} of scoring"
  return text + f" over {len(rows)} runs; tagging the corpora is not included\n"


def _minutes(seconds: float) -> str:
  return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def _write(workdir: pathlib.Path, config, rows, agg, text: str) -> dict:
  fileio.atomic_write_text(workdir / "report.md", text)
  results = {
    "config": config.to_dict(),
    "runs": rows,
    "summary": {
      label: {k: {"mean": v[0], "sd": v[1], "n": v[2]} for k, v in stats.items()}
      for label, stats in agg.items()
    },
  }
  fileio.atomic_write_json(workdir / "results.json", results, sort_keys=False)
  print(text, flush=True)
  return results


def write_experiment_report(workdir: pathlib.Path, config, rows: Sequence[dict]) -> dict:
  """Experiment 1: report.md (table, hypotheses), results.json, curves.png, metrics.png."""
  labels = list(dict.fromkeys(r["label"] for r in rows))
  agg = aggregate(rows, labels)
  _plot(workdir / "curves.png", _curves(rows, "Notes corpora: validation cost vs words seen"))
  _plot(
    workdir / "metrics.png",
    _bars(
      agg,
      [
        ("bits_per_byte", "bits/byte, all tokens\n(lower is better)"),
        ("note_bits_per_word", "note bits/word\n(model's own notes)"),
        ("words_per_window", "words of context\nper window"),
      ],
    ),
  )
  bpb = {label: agg[label]["bits_per_byte"] for label in labels}
  findings = []
  for name, pairs in (
    ("Notes help", [(v, "none") for v in ("pre", "post")]),
    ("Post beats pre", [("post", "pre")]),
    ("Blank notes alone help", [("blank", "none")]),
  ):
    for a, b in pairs:
      if a in bpb and b in bpb:
        findings.append(f"- **{name}** ({a} vs {b}): " + verdict(bpb[a], bpb[b], a, b))
  text = f"""# Notes corpora: experiment 1

Does a language model model language better when its corpus carries part-of-speech
notes, and is the note better placed before the word (pre) or after it (post)?

## Setup

{_setup(config, rows)}
## Results (headline: cannot leak)

{table(agg, COLUMNS_1, "variant")}

Mean ± standard deviation over seeds (no ± where one seed ran). {HEADLINE_NOTE}
*note bits/word*: what the model pays for its notes. *words/window*: words of context in one
window of {config.model.block_size} tokens (the none model sees the most).

![validation curves](curves.png)

![metrics](metrics.png)

## Hypotheses

Each is decided on the headline bits/byte by the 2σ rule: a difference larger than twice
the seed-to-seed spread of the difference is a finding, a smaller one is no difference.

1. *Notes help*: with notes (pre or post) the model codes the original text in fewer
   bits per byte than without (none), even paying for the notes.
2. *Post beats pre*: the note is better placed after its word than before it.
3. *Blank notes alone help*: the extra token slot without information (blank) lowers
   the cost against none.

{chr(10).join(findings)}

## Given the gold notes (upper bound; leaks future context)

{LEAK_NOTE}

{table(agg, COLUMNS_1_GOLD, "variant")}
"""
  return _write(workdir, config, rows, agg, text)


def write_richness_report(workdir: pathlib.Path, config, rows: Sequence[dict]) -> dict:
  """Experiment 2: report.md (table), results.json, richness.png (bits/byte vs entropy)."""
  labels = list(dict.fromkeys(r["label"] for r in rows))
  agg = aggregate(rows, labels)

  def draw(plt):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = [agg[l]["note_entropy"][0] for l in labels]
    for key, name in (
      ("bits_per_byte", "original text, model's own notes (headline)"),
      ("word_bits_per_byte", "words given gold notes (upper bound, leaks)"),
    ):
      ys = [agg[l][key][0] for l in labels]
      err = [agg[l][key][1] or 0.0 for l in labels]
      ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
    for x, y, l in zip(xs, [agg[l]["bits_per_byte"][0] for l in labels], labels):
      ax.annotate(l, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("note information: entropy of the notes (bits/word)")
    ax.set_ylabel("held-out bits/byte")
    ax.set_title("Post notes: richness vs cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig

  _plot(workdir / "richness.png", draw)
  _plot(workdir / "curves.png", _curves(rows, "Tag richness: validation cost vs words seen"))
  base = agg[labels[0]]["bits_per_byte"]
  findings = [
    f"- **{l} vs {labels[0]}**: " + verdict(agg[l]["bits_per_byte"], base, l, labels[0])
    for l in labels[1:]
  ]
  text = f"""# Notes corpora: experiment 2 (tag richness)

How much information should a post note carry? One model per richness level (blank,
coarse universal POS, fine tag, + morphological features, + dependency relation); the
information of a level is the entropy of its notes on the corpus, in bits per word.

## Setup

{_setup(config, rows)}
## Results

{table(agg, COLUMNS_2, "level")}

Mean ± standard deviation over seeds (no ± where one seed ran). {HEADLINE_NOTE}
*note bits/word*: what the model pays for its notes.

![bits per byte vs note entropy](richness.png)

![validation curves](curves.png)

## What the numbers say (2σ rule on the headline bits/byte)

{chr(10).join(findings)}

## Given the gold notes (upper bound; leaks future context)

{LEAK_NOTE}

{table(agg, COLUMNS_2_GOLD, "level")}
"""
  return _write(workdir, config, rows, agg, text)
