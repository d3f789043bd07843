"""Helpers shared by the command-line entry points."""

import contextlib
import sys

from absl import flags, logging

from llmjax.config import load as config_load
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


def check_config_flags(args: list[str]) -> list[str]:
  """Loads --config and checks each --config.KEY=VALUE against it before absl does, so a
  typo gets the closest valid key and a bad value the expected type. Returns the KEY names
  given (so a job can refuse one it never reads)."""
  spec = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), None)
  if spec is None:
    return []
  try:
    config = config_load.load_config(spec)
  except errors.ConfigError:
    raise
  except Exception as e:  # noqa: BLE001 - whatever get_config raised, say where.
    raise errors.ConfigError(f"--config={spec}: {type(e).__name__}: {e}") from e
  current = config_load.flatten(config)
  overridden = []
  for arg in args:
    if not arg.startswith("--config."):
      continue
    name, _, text = arg[len("--config.") :].partition("=")
    overridden.append(name)
    if name not in current:
      raise config_load.unknown_key_error(name, list(current), current.get("model.arch"))
    want = type(current[name])
    value = config_load.parse_value(text)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    fits = {
      bool: text.lower() in ("true", "false", "t", "f", "1", "0"),
      int: number and isinstance(value, int),
      float: number,
    }.get(want, True)
    if not fits:
      kind = {bool: "true or false", int: "an integer", float: "a number"}[want]
      raise errors.ConfigError(
        f"--config.{name}={text}: {name} takes {kind} (it is {current[name]!r} now)."
      )
  return overridden
