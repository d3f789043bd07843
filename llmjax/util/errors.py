"""Error types for problems a user can cause and fix.

Everything a user can get wrong or run into (a config typo, a missing or empty corpus, an
asset that cannot be fetched offline, a corrupt checkpoint, a diverged run, a full disk, a
locked workdir) raises a subclass of `LlmjaxError` whose message names the offending value
and the fix. The command-line entry points print these as one line and exit with status
1 (`llmjax.cli.user_errors`); any other exception is a bug and keeps its traceback.

Each class also derives from the builtin type that code raised for the same problem
before (ValueError, FileNotFoundError, RuntimeError, ...), so `except ValueError` and
friends keep working.
"""


class LlmjaxError(Exception):
  """A problem with the user's input, files or environment; the message says the fix."""


class ConfigError(LlmjaxError, ValueError):
  """A config is invalid; the message names the key and the fix."""


class DataError(LlmjaxError, ValueError):
  """A corpus, dataset or tokenizer cannot be used as configured."""


class DataFileNotFoundError(LlmjaxError, FileNotFoundError):
  """A configured data file (corpus, tokenizer.json, token directory) does not exist."""


class DataIsADirectoryError(LlmjaxError, IsADirectoryError):
  """A directory was given where a single file is read."""


class DownloadError(LlmjaxError, ConnectionError):
  """A configured URL could not be downloaded."""


class AssetError(LlmjaxError, RuntimeError):
  """An offline asset is missing, cannot be fetched, or fails verification."""


class CheckpointError(LlmjaxError, RuntimeError):
  """A checkpoint cannot be written or read, or does not fit the model."""


class TrainingError(LlmjaxError, RuntimeError):
  """Training cannot start or go on (locked workdir, non-finite loss, ...)."""


class RunNotFoundError(LlmjaxError, FileNotFoundError):
  """A directory given as a run directory holds no run (no config.json)."""


class SamplingError(LlmjaxError, ValueError):
  """Invalid generation arguments (negative token count or temperature, ...)."""


class SpacyModelMissingError(LlmjaxError, OSError):
  """The requested spaCy pipeline is not installed."""


class PretrainedNotFoundError(LlmjaxError, FileNotFoundError):
  """A pretrained checkpoint or tokenizer is neither a local directory nor downloadable."""


class PretrainedFormatError(LlmjaxError, ValueError):
  """A pretrained checkpoint's files do not hold what the model needs."""
