"""One job per workdir, stop signals as a flag, a changed model refused on resume."""

import json
import os
import signal

import pytest

from llmjax.config import schema as config_base
from llmjax.runs import workdir as workdir_lib
from llmjax.util import errors


def test_a_second_job_on_the_same_workdir_is_refused(tmp_path):
  with workdir_lib.workdir_lock(tmp_path):
    with pytest.raises(errors.TrainingError, match="is in use by another running job"):
      with workdir_lib.workdir_lock(tmp_path):
        pass
  with workdir_lib.workdir_lock(tmp_path):  # Released: free again.
    pass


def test_stop_signal_becomes_a_flag_and_handlers_are_restored():
  before = signal.getsignal(signal.SIGTERM)
  with workdir_lib.StopSignal() as stop:
    assert stop.received is None
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.received == "SIGTERM"
  assert signal.getsignal(signal.SIGTERM) is before


def test_write_config_refuses_a_changed_model_on_resume(tmp_path):
  config = config_base.base_config()
  workdir_lib.write_config(tmp_path, config, resuming=False)
  assert json.loads((tmp_path / "config.json").read_text())["model"]["n_layer"] == 6
  config.model.n_layer = 7
  with pytest.raises(errors.ConfigError, match="model.n_layer=6 .* now says 7"):
    workdir_lib.write_config(tmp_path, config, resuming=True)
  workdir_lib.write_config(tmp_path, config, resuming=False)  # A fresh run may.
