"""Notes corpora, variant `pre`: each word's part-of-speech note comes before the word.

  python -m llmjax.main --config=configs/pre_notes.py
  python -m llmjax.main --config=configs/pre_notes.py:cpu --workdir=runs/pre_notes_cpu

Variants (see llmjax/experiments/notes_config.py): default = ~96M parameters on
Shakespeare (GPU), `large` = fineweb streamed into a notes corpus (GPU, network),
`cpu` = a few minutes on 2 CPU cores, `smoke` = seconds. All four notes configs
share one base; configs/notes_experiment.py trains them side by side.
"""

from llmjax.experiments import notes_config


def get_config(arg=None):
  return notes_config.notes_config("pre", arg)
