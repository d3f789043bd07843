"""Progressive diverging GPT: stage layouts, identical logits at each transition, merging,
causality, decoding; the staged training job resumes across a stage boundary."""

import json
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from llmjax import models
from llmjax.config import schema as config_base
from llmjax.inference import generate
from llmjax.models import gpt
from llmjax.models import progressive as pg
from llmjax.train import progressive_task as progressive_train

VOCAB = 64


def make_cfg(stage, **kw):
  return pg.ProgressiveConfig(
    vocab_size=VOCAB, block_size=16, n_head=2, n_embd=16, stage=stage, lora_rank=4, **kw
  )


def params_of(model):
  return nnx.to_pure_dict(nnx.state(model))


def with_params(cfg, params):
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: pg.ProgressiveGPT(cfg, rngs=nnx.Rngs(0))))
  return nnx.merge(graphdef, params)


def perturb_adapters(params, seed):
  """Stands in for training: gives every adapter B factor non-zero values."""
  keys = iter(jax.random.split(jax.random.key(seed), 256))

  def fill(path, x):
    name = str(path[-1].key)
    return 0.05 * jax.random.normal(next(keys), x.shape) if name.startswith("lora_") else x

  return jax.tree_util.tree_map_with_path(fill, params)


def tokens():
  return jax.random.randint(jax.random.key(7), (2, 16), 0, VOCAB)


def grown_models(fused=True):
  """Stage 1 -> 2 -> 3 by `grow_params`; returns [(before, after), ...] per transition."""
  cfgs = [make_cfg(s, lora_fused=fused) for s in (1, 2, 3)]
  m1 = pg.ProgressiveGPT(cfgs[0], rngs=nnx.Rngs(0))
  fresh2 = params_of(pg.ProgressiveGPT(cfgs[1], rngs=nnx.Rngs(1)))
  m2 = with_params(cfgs[1], pg.grow_params(params_of(m1), cfgs[0], fresh2, cfgs[1]))
  m2_trained = with_params(cfgs[1], perturb_adapters(params_of(m2), 3))
  fresh3 = params_of(pg.ProgressiveGPT(cfgs[2], rngs=nnx.Rngs(2)))
  m3 = with_params(cfgs[2], pg.grow_params(params_of(m2_trained), cfgs[1], fresh3, cfgs[2]))
  return [(m1, m2), (m2_trained, m3)]


def test_stage_layouts():
  for stage, n_blocks, repeats in ((1, 3, 4), (2, 6, 2), (3, 12, 1)):
    model = pg.ProgressiveGPT(make_cfg(stage), rngs=nnx.Rngs(0))
    assert len(model.h) == n_blocks and model.cfg.repeats == repeats
    layer_blocks = model.layer_blocks()
    assert len(layer_blocks) == 12
    assert all(layer_blocks[i] is model.h[i // repeats] for i in range(12))
    has_lora = "lora_qkv_a" in params_of(model)["h"][0]["attn"]
    assert has_lora == (stage > 1)
  with pytest.raises(ValueError, match="stage_groups"):
    make_cfg(1, stage_groups=(5, 6, 12))


@pytest.mark.parametrize("fused", [True, False])
def test_logits_are_identical_across_each_transition(fused):
  (m1, m2), (m2_trained, m3) = grown_models(fused)
  np.testing.assert_array_equal(m2(tokens()), m1(tokens()))
  # Stage 3's frozen weights are stage 2's merged weights: equal up to float rounding.
  np.testing.assert_allclose(m3(tokens()), m2_trained(tokens()), atol=1e-5, rtol=0)
  assert np.abs(m2_trained(tokens()) - m2(tokens())).max() > 1e-3  # Adapters did change it.


def test_merged_gpt_matches_every_stage_and_decodes_identically():
  (m1, _), (m2, m3) = grown_models()
  for model in (m1, m2, m3):
    merged = pg.to_gpt(model)
    assert isinstance(merged, gpt.GPT) and len(merged.h) == 12
    np.testing.assert_allclose(merged(tokens()), model(tokens()), atol=1e-5, rtol=0)
  greedy = generate.SamplingParams(temperature=0.0)
  ours = generate.Generator(m3).generate([[1, 2, 3]], 6, params=greedy)
  plain = generate.Generator(pg.to_gpt(m3)).generate([[1, 2, 3]], 6, params=greedy)
  assert ours == plain


def test_causal_and_shared_block_gradients_accumulate():
  model = pg.ProgressiveGPT(make_cfg(1), rngs=nnx.Rngs(0))
  base = model(tokens())
  changed = tokens().at[:, 9].set(0)
  np.testing.assert_array_equal(model(changed)[:, :9], base[:, :9])

  graphdef, state = nnx.split(model)
  params = nnx.to_pure_dict(state)

  def loss(p):
    return jnp.mean(nnx.merge(graphdef, p)(tokens()) ** 2)

  grads = jax.grad(loss)(params)
  # Block 0 serves layers 0-3: its gradient is the sum over the four uses, the same as the
  # sum of the four layer gradients of the equivalent unshared 12-layer GPT.
  merged = pg.to_gpt(model)
  g_def, g_state = nnx.split(merged)
  g_grads = jax.grad(lambda p: jnp.mean(nnx.merge(g_def, p)(tokens()) ** 2))(
    nnx.to_pure_dict(g_state)
  )
  summed = sum(g_grads["h"][i]["mlp"]["c_fc"] for i in range(4))
  np.testing.assert_allclose(grads["h"][0]["mlp"]["c_fc"], summed, atol=1e-7, rtol=1e-4)


def test_registry_reads_stage_and_adapter_settings_from_the_model_section():
  c = config_base.base_config("progressive").model
  c.unlock()
  c.update(
    n_layer=12,
    n_head=2,
    n_embd=16,
    block_size=16,
    vocab_size=VOCAB,
    stage=2,
    lora_rank=2,
    lora_targets="qkv",
    stage_groups=[3, 6, 12],
  )
  model = models.build(c, seed=0)
  attn = params_of(model)["h"][0]["attn"]
  assert len(model.h) == 6 and attn["lora_qkv_a"].shape == (16, 2)
  assert "lora_proj_a" not in attn


def test_stage_boundaries():
  assert progressive_train.stage_boundaries(12, (1 / 3, 1 / 3, 1 / 3)) == [4, 8, 12]
  assert progressive_train.stage_boundaries(10, (0.5, 0.25, 0.25)) == [5, 8, 10]
  assert [progressive_train.stage_at(s, [4, 8, 12]) for s in (0, 3, 4, 7, 8, 12)] == [
    1,
    1,
    2,
    2,
    3,
    3,
  ]
  with pytest.raises(ValueError, match="stage_fractions"):
    progressive_train.stage_boundaries(12, (0.5, 0.6))


def smoke_config(tmp_path) -> ml_collections.ConfigDict:
  corpus = tmp_path / "corpus.txt"
  rng = np.random.default_rng(0)
  corpus.write_text(
    "\n".join(" ".join(rng.choice(["x", "y", "+", "=", "2", "3"], 12)) for _ in range(200))
  )
  from llmjax.config import load as config_load  # pylint: disable=import-outside-toplevel

  c = config_load.load_config("configs/progressive.py:smoke")
  c.unlock()
  c.data.source, c.data.path, c.data.tokenizer = "file", str(corpus), "char"
  c.model.vocab_size = 257
  c.train.steps, c.train.checkpoint_every, c.train.eval_every = 9, 2, 3
  c.train.sample_tokens = 0
  c.model.n_layer, c.model.stage_groups = 4, (1, 2, 4)  # Quicker to compile.
  c.lock()
  return c


def read_records(workdir):
  """metrics.jsonl without the wall-clock throughput."""
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").open()]
  return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "elapsed_s")} for r in records]


def final_params(workdir):
  from llmjax import api  # pylint: disable=import-outside-toplevel

  model, config, step = api.load_model(workdir)
  return params_of(model), config, step


@pytest.mark.slow
def test_training_job_switches_stages_and_resumes_across_a_boundary(tmp_path, monkeypatch):
  monkeypatch.setenv("LLMJAX_CACHE", str(tmp_path / "cache"))
  config = smoke_config(tmp_path)
  full = progressive_train.train(config, tmp_path / "full")
  assert full.step == 9 and full.stage_steps == [0, 3, 6]
  records = read_records(tmp_path / "full")
  switches = [(r["step"], r["stage"]) for r in records if set(r) == {"step", "stage", "tokens"}]
  assert switches == [(0, 1), (3, 2), (6, 3)]

  # Stop at step 2 (stage 1) and at step 4 (stage 2), resuming each time.
  split = tmp_path / "split"
  first = progressive_train.train(config, split, stop_at_step=2)
  assert first.interrupted and first.step == 2
  second = progressive_train.train(config, split, stop_at_step=4)
  assert second.step == 4 and second.resumed_from == 2
  # A copy whose newest checkpoint (step 4, stage 2) is unreadable falls back to step 2,
  # a stage-1 state, and trains on through the stage switch.
  fallback = tmp_path / "fallback"
  shutil.copytree(split, fallback)
  for path in (fallback / "checkpoints" / "4" / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  fell_back = progressive_train.train(config, fallback)
  assert fell_back.resumed_from == 2 and fell_back.step == 9
  assert (fallback / "checkpoints" / "4.corrupt").is_dir()
  third = progressive_train.train(config, split)
  assert third.resumed_from == 4 and third.step == 9

  want, want_cfg, _ = final_params(tmp_path / "full")
  got, got_cfg, step = final_params(split)
  assert step == 9 and got_cfg.model.stage == want_cfg.model.stage == 3
  jax.tree.map(np.testing.assert_array_equal, got, want)
  assert third.final_train_loss == full.final_train_loss
  assert third.final_val_loss == full.final_val_loss
  assert read_records(split) == records
  got, got_cfg, _ = final_params(fallback)
  assert got_cfg.model.stage == 3
  jax.tree.map(np.testing.assert_array_equal, got, want)
  assert fell_back.final_val_loss == full.final_val_loss
