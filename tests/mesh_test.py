"""Sharded training: every mesh trains exactly like one device, and checkpoints move
between meshes.

Runs the real trainer (`lm.train`) on 8 fake CPU devices (see conftest.py) with a tiny
GPT, a char tokenizer and a small text. Each configuration trains once per module and is
shared by the tests that need it.
"""

import shutil

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from llmjax import api, models
from llmjax.config import load as config_load
from llmjax.data import pipeline, shards
from llmjax.inference import generate
from llmjax.parallel import mesh as mesh_lib
from llmjax.runs import checkpoint as ckpt_lib
from llmjax.train import lm
from llmjax.train import metrics as metrics_lib
from llmjax.util import errors

TEXT = "".join(
  f"{i:03d} the quick brown fox jumps over the lazy dog; {i * 7 % 13} hens\n" for i in range(300)
)
STEPS = 4
MESHES = {"8x1x1": (8, 1, 1), "2x2x2": (2, 2, 2), "1x4x2": (1, 4, 2)}


def tiny_config(text_path, mesh=(1, 1, 1), num_devices=0, **overrides):
  config = config_load.load_config("configs/shakespeare.py:smoke").unlock()
  data, fsdp, tensor = mesh
  config_load.apply_overrides(
    config,
    {
      "data.source": "file",
      "data.path": str(text_path),
      "data.tokenizer": "char",
      "model.vocab_size": 257,
      "model.n_embd": 32,
      "model.n_head": 4,
      "model.n_layer": 2,
      "model.block_size": 16,
      "train.batch_size": 8,
      "train.steps": STEPS,
      "train.eval_every": 0,
      "train.eval_batches": 2,
      "train.checkpoint_every": 2,
      "train.log_every": 1,
      "train.sample_tokens": 0,
      "optim.learning_rate": 3e-3,
      "optim.warmup_steps": 1,
      "mesh.data": data,
      "mesh.fsdp": fsdp,
      "mesh.tensor": tensor,
      "mesh.num_devices": num_devices,
      **overrides,
    },
  )
  return config


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("data") / "fox.txt"
  path.write_text(TEXT)
  return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, text_file):
  """trained(mesh, num_devices=0, **overrides) -> (workdir, result), each trained once."""
  runs = {}

  def run(mesh, num_devices=0, **overrides):
    key = (mesh, num_devices, tuple(sorted(overrides.items())))
    if key not in runs:
      workdir = tmp_path_factory.mktemp("run")
      config = tiny_config(text_file, mesh, num_devices, **overrides)
      runs[key] = workdir, lm.train(config, workdir)
    return runs[key]

  return run


@pytest.fixture(scope="module")
def one_device(trained):
  return trained((1, 1, 1), num_devices=1)


def train_losses(workdir):
  return [r["train_loss"] for r in metrics_lib.read_metrics(workdir) if "train_loss" in r]


@pytest.mark.parametrize("name", list(MESHES))
def test_mesh_trains_like_one_device(name, trained, one_device):
  ref_dir, ref = one_device
  workdir, result = trained(MESHES[name])
  assert len(train_losses(ref_dir)) == STEPS
  np.testing.assert_allclose(train_losses(workdir), train_losses(ref_dir), rtol=0, atol=1e-5)
  # Evaluation on the mesh: the same fixed validation batches give the same loss.
  assert result.final_val_loss == pytest.approx(ref.final_val_loss, abs=1e-5)
  assert train_losses(ref_dir)[-1] < train_losses(ref_dir)[0]


def test_gradient_accumulation_on_mesh_matches_one_device(trained, one_device):
  ref_dir, _ = one_device
  workdir, _ = trained((2, 2, 2), **{"train.grad_accum": 2})
  np.testing.assert_allclose(train_losses(workdir), train_losses(ref_dir), rtol=0, atol=1e-5)


def ml_mesh(data, fsdp, tensor, num_devices=0):
  return ml_collections.ConfigDict(
    {"data": data, "fsdp": fsdp, "tensor": tensor, "num_devices": num_devices}
  )


def abstract_state_on(config, mesh):
  steps = lm.build_steps(config, mesh)
  return steps, ckpt_lib.abstract_like(steps.abstract_state, steps.state_shardings)


def test_params_and_optimizer_state_land_with_expected_shardings(trained, text_file):
  workdir, _ = trained(MESHES["2x2x2"])
  config = tiny_config(text_file, MESHES["2x2x2"])
  mesh = mesh_lib.make_mesh(config.mesh)
  _, target = abstract_state_on(config, mesh)
  splits = shards.prepare_tokens(config.data, progress=False)
  it = pipeline.train_iterator(splits.train, 16, 8, 0)
  step, state, _ = ckpt_lib.Checkpointer(workdir).restore_latest(target, it)
  assert step == STEPS
  params = state["params"]
  expected = {
    ("wte",): P("tensor", "fsdp"),
    ("wpe",): P(None, "fsdp"),
    ("h", 0, "mlp", "c_fc"): P("fsdp", "tensor"),
    ("h", 0, "mlp", "c_fc_bias"): P("tensor"),
    ("h", 0, "mlp", "c_proj"): P("tensor", "fsdp"),
    ("h", 1, "attn", "c_attn"): P("fsdp", None, "tensor", None),
    ("h", 1, "attn", "c_proj"): P("tensor", None, "fsdp"),
    ("h", 1, "ln_1", "scale"): P(None),
  }
  for path, spec in expected.items():
    leaf = params
    for key in path:
      leaf = leaf[key]
    assert leaf.sharding.spec == spec, path
    assert leaf.sharding.mesh.shape == {"data": 2, "fsdp": 2, "tensor": 2}
  c_fc = params["h"][0]["mlp"]["c_fc"]
  assert c_fc.shape == (32, 128)
  assert {s.data.shape for s in c_fc.addressable_shards} == {(16, 64)}
  # Adam's moments follow their parameter; the step counter is replicated.
  opt_leaves = jax.tree_util.tree_flatten_with_path(state["opt_state"])[0]
  c_fc_moments = [
    leaf
    for path, leaf in opt_leaves
    if jax.tree_util.keystr(path).endswith("['h'][0]['mlp']['c_fc']")
  ]
  assert len(c_fc_moments) == 2
  assert all(m.sharding.spec == P("fsdp", "tensor") for m in c_fc_moments)
  assert state["step"].sharding.is_fully_replicated and int(state["step"]) == STEPS


def test_scanned_layers_shard_the_stacked_axis_as_replicated():
  config = config_load.load_config("configs/shakespeare.py:smoke").unlock()
  config.model.scan_layers = True
  config.model.n_head = 4
  mesh = mesh_lib.make_mesh(ml_mesh(2, 2, 2))
  _, abstract = nnx.split(nnx.eval_shape(lambda: models.build(config.model, 0)))
  shardings = mesh_lib.param_shardings(abstract, mesh)
  assert shardings["h"]["mlp"]["c_fc"].spec == P(None, "fsdp", "tensor")
  assert shardings["h"]["attn"]["c_attn"].spec == P(None, "fsdp", None, "tensor", None)


def test_checkpoint_saved_on_8_devices_resumes_on_one_device(
  trained, one_device, text_file, tmp_path
):
  source_dir, _ = trained(MESHES["2x2x2"])
  ref_dir, _ = one_device
  workdir = tmp_path / "resume"
  shutil.copytree(source_dir, workdir)
  shutil.rmtree(workdir / "checkpoints" / str(STEPS))  # Keep step 2 of 4.
  shutil.rmtree(workdir / "best")
  result = lm.train(tiny_config(text_file, (1, 1, 1), num_devices=1), workdir)
  assert result.step == STEPS
  np.testing.assert_allclose(train_losses(workdir), train_losses(ref_dir), rtol=0, atol=1e-5)


def test_sampling_from_sharded_checkpoint(trained, text_file):
  workdir, _ = trained(MESHES["2x2x2"])
  config = tiny_config(text_file, MESHES["2x2x2"])
  mesh = mesh_lib.make_mesh(config.mesh)
  steps, target = abstract_state_on(config, mesh)
  params, step = ckpt_lib.restore_params(workdir, target["params"])
  assert step == STEPS
  assert params["h"][0]["mlp"]["c_fc"].sharding.spec == P("fsdp", "tensor")
  on_mesh = generate.Generator(nnx.merge(steps.graphdef, params))
  sampler = api.Sampler(workdir)  # Restores onto one device.
  prompt = sampler.tokenizer.encode("012 the")
  greedy = generate.SamplingParams(temperature=0.0)
  want = on_mesh.generate([prompt], 6, params=greedy)

  assert sampler.step == STEPS
  devices = {d for leaf in jax.tree.leaves(nnx.state(sampler.model)) for d in leaf.devices()}
  assert len(devices) == 1
  assert sampler.generate_tokens(prompt, 6, temperature=0.0) == want
  text = sampler.generate_text("012 the", 6, temperature=0.0)
  assert text == "012 the" + sampler.tokenizer.decode(want[0])  # The prompt, then the new text.


def test_mesh_sizes_are_checked():
  with pytest.raises(ValueError, match="8 are available"):
    mesh_lib.make_mesh(ml_mesh(2, 2, 1))
  with pytest.raises(ValueError, match="do not divide"):
    mesh_lib.make_mesh(ml_mesh(3, -1, 1))
  with pytest.raises(ValueError, match="num_devices=9"):
    mesh_lib.make_mesh(ml_mesh(-1, 1, 1, num_devices=9))
  assert dict(mesh_lib.make_mesh(ml_mesh(-1, 2, 1, num_devices=4)).shape) == {
    "data": 2,
    "fsdp": 2,
    "tensor": 1,
  }
  subset = jax.devices()[4:6]
  mesh = mesh_lib.make_mesh(ml_mesh(1, 1, -1), devices=subset)
  assert list(mesh.devices.flat) == subset and mesh.shape["tensor"] == 2


def test_batch_not_divisible_by_mesh_fails_clearly(text_file, tmp_path):
  config = tiny_config(text_file, (8, 1, 1), **{"train.batch_size": 4})
  with pytest.raises(errors.ConfigError, match="divisible by the 8 devices"):
    lm.train(config, tmp_path)
