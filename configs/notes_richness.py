"""Notes corpora, experiment 2: how much information should a post note carry?

  python -m llmjax.main --config=configs/notes_richness.py:cpu --workdir=runs/richness_cpu
  python -m spacy download pl_core_news_sm   # Polish, the target language:
  python -m llmjax.main --config=configs/notes_richness.py:polish --config.data.path=tekst.txt

One post-notes model per tag-richness level (blank, upos, tag, tag+morph, tag+morph+dep),
all with the same shape, seed and word budget; WORKDIR/report.md gives bits per byte
against each level's note entropy (bits per word), with richness.png. The language is a
config switch: the spaCy pipeline (notes.spacy_model) plus the text (data section); Polish
is the target. Variants: default (English, Shakespeare, ~96M parameters, GPU), `cpu`
(English, three seeds, 2 CPU cores), `polish` (pl_core_news_sm on your text, three seeds),
`czech` (cs_core_news_sm on a generated template text: exercises the Czech pipeline only;
no natural Czech text ships, so it gives no result), `smoke` (Czech template, seconds, for
tests).
"""

from llmjax.config import schema as config_base
from llmjax.experiments import notes_config
from llmjax.util import errors


def get_config(arg=None):
  size = {"czech": "cpu", "polish": "cpu"}.get(arg, arg)
  c = notes_config.notes_config("post", size)
  c.name = "notes-richness" + (f"-{arg}" if arg else "")  # Run name.
  c.job = "notes_richness"  # llmjax.experiments.notes.run_richness.
  config_base.with_sections(c, "experiment")
  if arg == "cpu":
    c.experiment.seeds = (0, 1, 2)
    c.experiment.budget = 100_000
    c.experiment.eval_words = 20_000
  elif arg in ("czech", "smoke"):
    c.notes.spacy_model = "cs_core_news_sm"  # pip install cs-core-news-sm
    c.notes.limit_chars = 0
    c.experiment.text = "czech"
    c.experiment.text_sentences = 6000
    c.experiment.budget = 60_000
    c.experiment.eval_words = 5_000
    if arg == "smoke":
      c = _smoke(c)
  elif arg == "polish":
    c.experiment.seeds = (0, 1, 2)
    c.notes.spacy_model = "pl_core_news_sm"  # python -m spacy download pl_core_news_sm
    c.data.source = "file"
    c.data.path = ""  # Your Polish text: --config.data.path=tekst.txt
    c.experiment.budget = 100_000
    c.experiment.eval_words = 20_000
  elif arg:
    raise errors.ConfigError(
      f"Unknown variant {arg!r} of configs/notes_richness.py; use cpu, czech, polish or smoke."
    )
  return c


def _smoke(c):
  smoke = notes_config.notes_config("post", "smoke")
  c.model = smoke.model
  c.train = smoke.train
  c.optim = smoke.optim
  c.experiment.text_sentences = 200
  c.experiment.budget = 400
  c.experiment.evals = 1
  c.experiment.eval_words = 200
  return c
