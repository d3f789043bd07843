"""Writes a trained run as a Hugging Face GPT-2 directory (config.json, model.safetensors,
tokenizer files) that `transformers.GPT2LMHeadModel.from_pretrained(DIR)` loads.

  python -m llmjax.export --workdir=runs/book --out=exported/book [--checkpoint=best]
"""

from absl import app, flags

from llmjax import api
from llmjax.cli import common as cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by llmjax.main.")
_OUT = flags.DEFINE_string("out", None, "Directory to write the Hugging Face files into.")
_WHICH = flags.DEFINE_enum(
  "checkpoint",
  "latest",
  ["latest", "best"],
  "Which checkpoint: the latest or the best validation loss.",
)


def main(argv):
  del argv
  cli.quiet_logs()
  if not _WORKDIR.value or not _OUT.value:
    raise app.UsageError("--workdir=RUN and --out=DIR are both required.")
  with cli.user_errors():
    sampler = api.Sampler(_WORKDIR.value, which=_WHICH.value)
    out = sampler.export(_OUT.value)
  print(
    f"Wrote {out} (step {sampler.step}): load it with "
    f"transformers.GPT2LMHeadModel.from_pretrained({str(out)!r})."
  )


def run():
  """Runs the program with the process's command line."""
  app.run(main)


if __name__ == "__main__":
  run()
