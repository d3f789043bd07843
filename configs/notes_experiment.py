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

from llmjax import config_base
from llmjax.experiments import notes_config


def get_config(arg=None):
  c = notes_config.notes_config("pre", arg)
  c.name = "notes-experiment" + (f"-{arg}" if arg else "")  # Run name.
  c.job = "notes_experiment"  # llmjax.experiments.notes.run_experiment.
  config_base.with_sections(c, "experiment")
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
