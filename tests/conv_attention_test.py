"""Convolution-attention model: layout shapes, exact causality, padding, decoding, offsets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llmjax import models
from llmjax.config import schema as config_base
from llmjax.inference import generate
from llmjax.models import conv_attention as ca
from llmjax.models import loss as loss_lib
from llmjax.train import step as step_lib

VOCAB = 50


def make_model(block_size=64, fan_in=4, n_embd=16, seed=0, **kw):
  cfg = ca.ConvAttentionConfig(
    vocab_size=VOCAB, block_size=block_size, n_head=2, n_embd=n_embd, fan_in=fan_in, **kw
  )
  return ca.ConvAttention(cfg, rngs=nnx.Rngs(params=seed))


def random_tokens(b, t, seed=0):
  return jax.random.randint(jax.random.key(seed), (b, t), 0, VOCAB)


def test_every_block_of_the_layout_has_the_documented_shape():
  t, d = 64, 16  # T/4 = 16, T/16 = 4, T/64 = 1.
  trace = []
  model = make_model(block_size=t, n_embd=d)
  model.hidden(random_tokens(2, t), trace=trace)
  expected = [
    ("embed", (2, t, d)),
    ("block", (2, t, d)),
    ("compress", (2, t // 4, 2 * d)),
    ("block", (2, t // 4, 2 * d)),
    ("block", (2, t // 4, 2 * d)),
    ("compress", (2, t // 16, 4 * d)),
    ("block", (2, t // 16, 4 * d)),
    ("block", (2, t // 16, 4 * d)),
    ("compress", (2, t // 64, 8 * d)),
    ("block", (2, t // 64, 8 * d)),
    ("block", (2, t // 64, 8 * d)),
    ("expand", (2, t // 16, 4 * d)),
    ("block", (2, t // 16, 4 * d)),
    ("block", (2, t // 16, 4 * d)),
    ("expand", (2, t // 4, 2 * d)),
    ("block", (2, t // 4, 2 * d)),
    ("block", (2, t // 4, 2 * d)),
    ("expand", (2, t, d)),
    ("block", (2, t, d)),
  ]
  assert trace == expected
  assert len(model.blocks) == 12
  assert model(random_tokens(2, t)).shape == (2, t, VOCAB)


def dependence(model, t_len, seed=0):
  """G[t, s] = |d (logits[t] . r) / d embedding[s]|: how much output t depends on input s."""
  x = model.embed(random_tokens(1, t_len, seed))
  r = jax.random.normal(jax.random.key(seed + 1), (VOCAB,))

  graphdef, state = nnx.split(model)

  @jax.jit  # One compiled program instead of one per operation.
  def all_grads(state, x):
    def out_t(x, t):
      m = nnx.merge(graphdef, state)
      return m.unembed(m.body(x))[0, t] @ r

    return jax.vmap(jax.grad(out_t), in_axes=(None, 0))(x, jnp.arange(t_len))

  grads = all_grads(state, x)
  return np.asarray(jnp.abs(grads[:, 0]).sum(-1))


@pytest.mark.parametrize("fan_in,t_len", [(2, 16), pytest.param(4, 64, marks=pytest.mark.slow)])
def test_gradient_proves_exact_causality(fan_in, t_len):
  g = dependence(make_model(block_size=t_len, fan_in=fan_in, seed=fan_in), t_len)
  future = np.triu(np.ones_like(g, dtype=bool), k=1)
  assert np.all(g[future] == 0.0), "an output depends on a later input"
  # ... and every output does use every earlier input (the skip streams are wired).
  assert np.all(g[~future] > 0.0)


def test_gradient_test_catches_a_missing_group_shift(monkeypatch):
  def leaky_expand(self, y_BxGxE, skip_BxTxD):
    b, g, _ = y_BxGxE.shape
    x = jnp.einsum("bge,efd->bgfd", self.ln(y_BxGxE), self.kernel[...])
    return skip_BxTxD + x.reshape(b, g * self.fan_in, -1)

  monkeypatch.setattr(ca.Expand, "__call__", leaky_expand)
  g = dependence(make_model(block_size=16, fan_in=2), 16)
  assert np.any(g[np.triu(np.ones_like(g, dtype=bool), k=1)] > 0.0)


def test_changing_a_future_token_leaves_earlier_logits_bitwise_unchanged():
  model = make_model()
  tokens = random_tokens(1, 64)
  base = model(tokens)
  for s in (5, 16, 40, 63):
    changed = tokens.at[0, s].set((tokens[0, s] + 1) % VOCAB)
    np.testing.assert_array_equal(model(changed)[0, :s], base[0, :s])


def test_short_inputs_are_padded_with_a_mask_and_match_the_full_window():
  model = make_model()
  tokens = random_tokens(2, 64)
  full = model(tokens)
  for t in (1, 10, 37):
    short = model(tokens[:, :t])
    assert short.shape == (2, t, VOCAB)
    np.testing.assert_allclose(short, full[:, :t], atol=2e-5, rtol=0)


def test_cached_decode_equals_full_window_greedy_for_64_tokens():
  # fan_in 2, 3 levels: every level completes groups many times in 64 steps; an 11-token
  # prompt leaves the prefill's padding inside unfinished groups at every level.
  model = make_model(block_size=128, fan_in=2, n_embd=16, seed=3)
  prompts = np.asarray(random_tokens(2, 11, seed=4))
  generator = generate.Generator(model)
  out = generator.generate(prompts.tolist(), 64, params=generate.SamplingParams(0.0))
  assert generator.compilations == 2  # One prefill, one decode loop.

  want = np.asarray(generate.WindowGreedy(model).generate(prompts.tolist(), 64))
  np.testing.assert_array_equal(np.asarray(out), want)
  assert len(set(want[0].tolist())) > 3  # Not a degenerate repetition of one token.


def test_registry_builds_it_from_a_config_section():
  c = config_base.base_config("conv_attention")
  c.model.block_size, c.model.n_embd, c.model.n_head, c.model.vocab_size = 64, 16, 2, VOCAB
  model = models.build(c.model, seed=0)
  assert isinstance(model, ca.ConvAttention) and model.cfg.fan_in == 4
  c.model.block_size = 100
  with pytest.raises(ValueError, match="multiple of fan_in\\*\\*3 = 64"):
    models.build(c.model)


def test_target_offset_scores_the_token_k_ahead():
  batch = {"inputs": jnp.arange(8)[None], "targets": jnp.arange(1, 9)[None]}
  shifted = step_lib.offset_targets(batch, 3)
  np.testing.assert_array_equal(shifted["targets"], [[3, 4, 5, 6, 7, 8, -1, -1]])
  assert step_lib.offset_targets(batch, 1) is batch

  model = make_model(block_size=16, fan_in=2, target_offset=3)
  graphdef, params = nnx.split(model)
  tokens = random_tokens(2, 17)
  micro = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
  loss, _ = step_lib.lm_loss(graphdef, 0.0)(params, micro, None)
  logits = model(micro["inputs"])
  want, _ = loss_lib.cross_entropy(logits[:, :-2], tokens[:, 3:])
  np.testing.assert_allclose(loss, want, rtol=1e-6)
