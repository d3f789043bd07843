"""Writes a trained run as a Hugging Face GPT-2 directory (config.json, model.safetensors,
tokenizer files) that `transformers.GPT2LMHeadModel.from_pretrained(DIR)` loads.

  python -m llmjax.export --workdir=runs/book --out=exported/book [--checkpoint=best]

--out must be a new or empty directory; --overwrite replaces a previous export there
(refused if the directory holds other files). The files are built beside it and renamed
into place, so a crash leaves the old directory, and nothing is written through a symlink.
"""

import pathlib

from absl import app, flags

from llmjax import api
from llmjax.cli import common as cli
from llmjax.pretrained import hf_export

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory written by llmjax.main.")
_OUT = flags.DEFINE_string("out", None, "New or empty directory for the Hugging Face files.")
_OVERWRITE = flags.DEFINE_bool(
  "overwrite", False, "Replace a previous export in --out (refused if it holds other files)."
)
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
    hf_export.check_destination(pathlib.Path(_OUT.value).expanduser(), _OVERWRITE.value)
    sampler = api.Sampler(_WORKDIR.value, which=_WHICH.value)
    out = sampler.export(_OUT.value, overwrite=_OVERWRITE.value)
  print(
    f"Wrote {out} (step {sampler.step}): load it with "
    f"transformers.GPT2LMHeadModel.from_pretrained({str(out)!r})."
  )


def run():
  """Runs the program with the process's command line."""
  app.run(main)


if __name__ == "__main__":
  run()
