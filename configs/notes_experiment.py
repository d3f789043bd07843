"""Notes corpora, experiment 1: pre / post / blank / none notes, trained and scored alike.

  python -m llmjax.main --config=configs/notes_experiment.py:cpu --workdir=runs/notes_cpu
  python -m llmjax.main --config=configs/notes_experiment.py --workdir=runs/notes   # GPU
  python -m llmjax.main --config=configs/notes_experiment.py:cpu --config.experiment.seeds="(0,1,2)"

Trains the four variants of configs/{pre,post,blank,no}_notes.py with the same seed and the
same budget of original words (or tokens) seen, scores each on the same held-out text and
writes WORKDIR/report.md (table, hypotheses), results.json and PNG plots. Variants: default
(~96M parameters, Shakespeare, GPU), `large` (fineweb, GPU), `cpu` (<= 45 minutes on 2
cores), `smoke` (seconds, for tests).
"""

import ml_collections

from llmjax.experiments import notes_config


def get_config(arg=None):
  c = notes_config.notes_config("pre", arg)
  c.name = "notes-experiment" + (f"-{arg}" if arg else "")  # Run name.
  c.job = "notes_experiment"  # llmjax.experiments.notes.run_experiment.
  c.experiment = ml_collections.ConfigDict()
  c.experiment.variants = ("pre", "post", "blank", "none")  # Corpus variants to train and compare.
  c.experiment.seeds = (0,)  # Training seeds; with several, the report gives the seed-to-seed spread.
  c.experiment.budget_unit = "words"  # What the budget counts: original words or tokens (notes included).
  c.experiment.budget = 10_000_000  # Words (or tokens) of training text every run sees.
  c.experiment.evals = 10  # Validation points per run (the curves in the report).
  c.experiment.eval_words = 0  # Held-out words scored per run (0 = the whole val split).
  c.experiment.eval_batch_size = 8  # Windows per scoring batch.
  c.experiment.text = ""  # '' = the data section's text; 'czech' = a generated Czech text.
  c.experiment.text_sentences = 0  # Sentences of the generated text.
  if arg == "large":
    c.experiment.budget = 300_000_000
    c.experiment.eval_words = 1_000_000
  elif arg == "cpu":
    c.experiment.budget = 100_000
    c.experiment.eval_words = 20_000
  elif arg == "smoke":
    c.experiment.budget = 600
    c.experiment.evals = 1
    c.experiment.eval_words = 300
  return c
