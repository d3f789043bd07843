"""Helpers shared by the command-line entry points."""

from absl import flags
from absl import logging


def quiet_logs():
  """Library INFO logs (checkpoint internals) drown the progress bar; --verbosity=0 restores them."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
