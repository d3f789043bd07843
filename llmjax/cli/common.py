"""Helpers shared by the command-line entry points."""

import contextlib
import sys

from absl import flags, logging

from llmjax.util import errors


def quiet_logs():
  """Library INFO logs (checkpoint internals) drown the progress bar; --verbosity=0 restores them."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


@contextlib.contextmanager
def user_errors():
  """Turns a user error (`llmjax.util.errors.LlmjaxError`) into one line on stderr and exit
  status 1, and Ctrl-C outside the training loop into status 130; other exceptions are
  bugs and keep their traceback."""
  try:
    yield
  except errors.LlmjaxError as e:
    sys.exit(f"Error: {e}")
  except KeyboardInterrupt:
    print("Interrupted.", file=sys.stderr)
    sys.exit(130)
