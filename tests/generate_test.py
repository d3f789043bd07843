"""KV-cache decoding: equals full recomputation; compiles once per (batch, bucket)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llmjax import generate
from llmjax import models
from llmjax.models import gpt

CFG = gpt.GPTConfig(vocab_size=101, block_size=64, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def model():
  return models.build(CFG, seed=3)


def greedy_by_recomputation(model, prompt, n):
  """Greedy decoding that re-runs the whole (right-padded, causal) window every token."""
  forward = jax.jit(lambda tokens: model(tokens))
  seq = list(prompt)
  for _ in range(n):
    window = seq[-CFG.block_size:]
    padded = np.zeros((1, CFG.block_size), np.int32)
    padded[0, :len(window)] = window
    logits = forward(jnp.asarray(padded))
    seq.append(int(jnp.argmax(logits[0, len(window) - 1])))
  return seq[len(prompt):]


@pytest.mark.parametrize("scan", [False, True])
def test_cached_greedy_equals_full_recomputation(scan):
  m = models.build(gpt.GPTConfig(**{**CFG.__dict__, "scan_layers": scan}), seed=3)
  # Random-ish prompt so the greedy path is not a constant token.
  prompt = [int(x) for x in np.random.default_rng(0).integers(0, 101, 7)]
  gen = generate.Generator(m, eot_id=100)
  out = gen.generate([prompt], 40, params=generate.SamplingParams(temperature=0.0))[0]
  assert out == greedy_by_recomputation(m, prompt, 40)


def test_one_compilation_per_batch_and_bucket(model):
  gen = generate.Generator(model, eot_id=100)
  greedy = generate.SamplingParams(temperature=0.0)
  gen.generate([[1, 2, 3]], 5, params=greedy)
  first = gen.compilations
  assert first == 2  # One prefill (bucket 16) and one decode loop.
  gen.generate([[4, 5, 6, 7]], 9, params=greedy)  # Same bucket, other length and budget.
  gen.generate([[4, 5, 6, 7]], 3, params=generate.SamplingParams(temperature=0.7, top_k=5))
  assert gen.compilations == first
  gen.generate([[1] * 20], 3, params=greedy)  # New bucket (32): one more prefill.
  assert gen.compilations == first + 1


def test_generation_beyond_the_context_continues(model):
  gen = generate.Generator(model, eot_id=100)
  out = gen.generate([[1, 2]], 150, params=generate.SamplingParams(temperature=1.0), seed=0)[0]
  assert len(out) == 150


def test_long_prompt_is_cropped_from_the_left_with_a_warning(model):
  gen = generate.Generator(model, eot_id=100)
  prompt = list(range(100))
  with pytest.warns(UserWarning, match="longer than the context"):
    out = gen.generate([prompt], 4, params=generate.SamplingParams(temperature=0.0))[0]
  assert out == greedy_by_recomputation(model, prompt[-60:], 4)


def test_empty_prompt_starts_from_end_of_text(model):
  gen = generate.Generator(model, eot_id=100)
  out = gen.generate([[]], 5, params=generate.SamplingParams(temperature=0.0))[0]
  assert out == greedy_by_recomputation(model, [100], 5)


def test_zero_new_tokens_returns_nothing(model):
  gen = generate.Generator(model, eot_id=100)
  assert gen.generate([[1, 2]], 0) == [[]]


def test_seeded_sampling_is_reproducible_and_seed_dependent(model):
  gen = generate.Generator(model, eot_id=100)
  p = generate.SamplingParams(temperature=1.0)
  a = gen.generate([[1, 2], [1, 2]], 20, params=p, seed=1)
  b = gen.generate([[1, 2], [1, 2]], 20, params=p, seed=1)
  c = gen.generate([[1, 2], [1, 2]], 20, params=p, seed=2)
  assert a == b and a != c


def test_top_k_one_is_greedy(model):
  gen = generate.Generator(model, eot_id=100)
  a = gen.generate([[5, 6]], 10, params=generate.SamplingParams(temperature=1.0, top_k=1), seed=4)
  b = gen.generate([[5, 6]], 10, params=generate.SamplingParams(temperature=0.0))
  assert a == b


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  keys = jax.random.split(jax.random.key(0), 200)
  draws = jax.jit(jax.vmap(lambda k: generate.sample_token(logits, k, 1.0, 0, 0.75)))(keys)
  seen = set(np.asarray(draws).ravel().tolist())
  assert seen == {0, 1}


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_k=-2), dict(top_p=0.0)])
def test_invalid_sampling_params_are_rejected(bad):
  with pytest.raises(ValueError):
    generate.SamplingParams(**bad)


def test_top_k_keeps_exactly_the_k_largest():
  logits = jnp.asarray([[0.1, 3.0, -2.0, 2.5, 1.0, 2.9]])
  keys = jax.random.split(jax.random.key(0), 300)
  draws = jax.jit(jax.vmap(lambda k: generate.sample_token(logits, k, 5.0, 3, 1.0)))(keys)
  assert set(np.asarray(draws).ravel().tolist()) == {1, 3, 5}


def test_prefill_projects_only_the_last_prompt_position(model):
  tokens = jax.random.randint(jax.random.key(5), (2, 8), 0, CFG.vocab_size)
  full, cache_full = model.decode(tokens, model.init_cache(2), 0)
  last, cache_last = model.decode_last(tokens, model.init_cache(2), 0, 5)
  assert last.shape == (2, CFG.vocab_size)
  np.testing.assert_allclose(last, full[:, 5], rtol=1e-6, atol=1e-6)
  jax.tree.map(np.testing.assert_array_equal, cache_last, cache_full)
