"""Notes corpora, experiment 1: pre / post / blank / none notes, trained and scored alike.

  python -m llmjax.main --config=configs/notes_experiment.py:cpu --workdir=runs/notes_cpu
  python -m llmjax.main --config=configs/notes_experiment.py:cpu_bpe --workdir=runs/notes_cpu_bpe
  python -m llmjax.main --config=configs/notes_experiment.py --workdir=runs/notes   # GPU

Trains the four variants of configs/{pre,post,blank,no}_notes.py with the same seed and the
same budget of original words (or tokens) seen, scores each on the same held-out text and
writes WORKDIR/report.md (table, hypotheses), results.json and PNG plots. Rerunning the same
command skips finished runs and resumes the unfinished one. Variants: default (~96M
parameters, Shakespeare, GPU), `large` (fineweb, GPU), `cpu` (byte tokens, three seeds),
`cpu_bpe` (GPT-2 BPE, three seeds, sized for under an hour on 2 idle cores), `smoke`
(seconds, for tests).
"""

from llmjax.config import schema as config_base
from llmjax.experiments import notes_config

# Words per run of `cpu_bpe` (as many as `cpu`): 115 steps per notes run and 66 for none at
# 2.34 and 1.34 tokens per word and 2,048 tokens per step, rounded up; docs/notes.md has the measured
# run of 25,000 words (17 minutes) this size was scaled from.
CPU_BPE_BUDGET_WORDS = 100_000


def get_config(arg=None):
  c = notes_config.notes_config("pre", arg)
  c.name = "notes-experiment" + (f"-{arg}" if arg else "")  # Run name.
  c.job = "notes_experiment"  # llmjax.experiments.notes.run_experiment.
  config_base.with_sections(c, "experiment")
  if arg == "large":
    c.experiment.budget = 300_000_000
    c.experiment.eval_words = 1_000_000
  elif arg == "cpu":
    c.experiment.seeds = (0, 1, 2)
    c.experiment.budget = 100_000
    c.experiment.eval_words = 20_000
  elif arg == "cpu_bpe":
    c.experiment.seeds = (0, 1, 2)
    c.experiment.budget = CPU_BPE_BUDGET_WORDS
    c.experiment.evals = 3  # Validation passes through the 50k-way softmax cost as much as steps.
    c.train.eval_batches = 4
    c.experiment.eval_words = 5_000
  elif arg == "smoke":
    c.experiment.budget = 600
    c.experiment.evals = 1
    c.experiment.eval_words = 300
  return c
