"""KV-cache decoding: equals full recomputation; compiles once per (batch, bucket)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llmjax import models
from llmjax.inference import generate
from llmjax.models import gpt
from llmjax.util import errors

CFG = gpt.GPTConfig(vocab_size=101, block_size=64, n_layer=2, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def model():
  return models.build(CFG, seed=3)


def greedy_by_recomputation(model, prompt, n):
  """Greedy decoding that re-runs the whole (right-padded, causal) window every token."""
  forward = jax.jit(lambda tokens: model(tokens))
  seq = list(prompt)
  for _ in range(n):
    window = seq[-CFG.block_size :]
    padded = np.zeros((1, CFG.block_size), np.int32)
    padded[0, : len(window)] = window
    logits = forward(jnp.asarray(padded))
    seq.append(int(jnp.argmax(logits[0, len(window) - 1])))
  return seq[len(prompt) :]


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
  with pytest.warns(UserWarning, match="generating from its last 36 tokens"):
    out = gen.generate([prompt], 4, params=generate.SamplingParams(temperature=0.0))[0]
  assert out == greedy_by_recomputation(model, prompt[64:], 4)


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


def test_cast_model_runs_the_decode_in_bfloat16_and_leaves_the_original(model):
  cast = generate.cast_model(model, "bfloat16")
  assert cast.cfg.dtype == jnp.bfloat16 and cast.h[0].attn.cfg.dtype == jnp.bfloat16
  assert {x.dtype for x in jax.tree.leaves(nnx.state(cast))} == {jnp.dtype(jnp.bfloat16)}
  assert {x.dtype for x in jax.tree.leaves(nnx.state(model))} == {jnp.dtype(jnp.float32)}
  assert generate.cast_model(model, "float32") is model
  cache = cast.init_cache(1)
  assert cache[0]["k"].dtype == jnp.bfloat16
  prompt = [int(x) for x in np.random.default_rng(0).integers(0, 101, 7)]
  out = generate.Generator(cast, eot_id=100).generate(
    [prompt], 12, params=generate.SamplingParams(temperature=0.0)
  )[0]
  assert out == greedy_by_recomputation(cast, prompt, 12)


def test_cast_params_casts_floating_leaves_only():
  tree = {"w": jnp.ones((2,), jnp.float32), "ids": jnp.arange(3)}
  cast = generate.cast_params(tree, jnp.bfloat16)
  assert cast["w"].dtype == jnp.bfloat16 and cast["ids"].dtype == tree["ids"].dtype


def test_unknown_inference_dtype_is_a_sampling_error(model):
  with pytest.raises(
    errors.SamplingError,
    match=r"dtype='int8' is not an inference dtype; "
    r"use one of float32, bfloat16, float16\.",
  ):
    generate.cast_model(model, "int8")


def loop_copies(hlo_text: str, min_elements: int) -> list[str]:
  """`copy` / `transpose` ops of at least `min_elements` elements that run inside a while
  loop of a compiled HLO module (in the loop body or anything it calls)."""
  comps, name = {}, None
  for line in hlo_text.splitlines():
    header = re.match(r"^(?:ENTRY )?%(\S+) ", line)
    if header:
      name = header.group(1)
      comps[name] = []
    elif name is not None:
      comps[name].append(line)
  todo = [
    body for lines in comps.values() for ln in lines for body in re.findall(r"body=%([\w.\-]+)", ln)
  ]
  seen = set()
  while todo:
    comp = todo.pop()
    if comp in seen or comp not in comps:
      continue
    seen.add(comp)
    todo += [r for ln in comps[comp] for r in re.findall(r"%([\w.\-]+)", ln) if r in comps]
  found = []
  for comp in seen:
    for ln in comps[comp]:
      op = re.search(r"= [a-z0-9]+\[([\d,]*)\]\S* (copy|transpose)\(", ln)
      if op and int(np.prod([int(d) for d in op.group(1).split(",") if d])) >= min_elements:
        found.append(ln.strip()[:100])
  return found


def decode_loop_hlo(gen: generate.Generator, batch: int) -> str:
  """The compiled HLO of `gen`'s greedy decode loop after a 4-token prompt at `batch`."""
  logits, cache = gen._prefill(gen.state, jnp.zeros((batch, 16), jnp.int32), jnp.int32(4))
  return (
    gen._decode_loop.lower(
      gen,
      gen.state,
      cache,
      logits,
      jnp.int32(4),
      jnp.int32(8),
      jax.random.key(0),
      jnp.float32(0.0),
      jnp.int32(0),
      jnp.float32(1.0),
    )
    .compile()
    .as_text()
  )


def test_decode_loop_transposes_no_weight():
  """Each decoded token reads every weight once; a weight transposed per token costs as
  much again (at batch 1, the decode loop's QKV einsum once did: see `decode_qkv`).

  Only weight-sized copies are checked here (the context is shorter than the width, so a
  layer's cache is smaller than any weight); caches are checked below.
  """
  cfg = gpt.GPTConfig(vocab_size=101, block_size=32, n_layer=1, n_head=2, n_embd=64)
  gen = generate.Generator(models.build(cfg, seed=3), eot_id=100)
  hlo = decode_loop_hlo(gen, 1)
  smallest_weight = cfg.n_embd * cfg.n_embd
  assert loop_copies(hlo, smallest_weight) == []
  # The check does find such a copy: the training path's QKV einsum in a loop.
  w = gen.state["h"][0]["attn"]["c_attn"][...]
  transposing = jax.jit(
    lambda x, w: jax.lax.fori_loop(
      0, 3, lambda i, x: x + jnp.einsum("btd,dchk->cbthk", x, w)[0].reshape(x.shape[0], 1, -1), x
    )
  )
  assert loop_copies(
    transposing.lower(jnp.ones((1, 1, cfg.n_embd)), w).compile().as_text(), smallest_weight
  )


@pytest.mark.parametrize("n_head,n_embd,batch", [(2, 32, 1), (4, 64, 3)])
def test_decode_loop_writes_each_cache_in_place(n_head, n_embd, batch):
  """No copy of a layer's cache per token (with a separate batch axis in the cache, or
  with the scores read from the cache before the write, XLA:CPU copied every layer's keys
  and values once or twice per token: 48 copies of 3 MB per token at GPT-2 small's shape
  with context 1024)."""
  cfg = gpt.GPTConfig(vocab_size=101, block_size=64, n_layer=2, n_head=n_head, n_embd=n_embd)
  hlo = decode_loop_hlo(generate.Generator(models.build(cfg, seed=3)), batch)
  assert loop_copies(hlo, batch * n_embd * cfg.block_size) == []


def test_scanned_decode_loop_copies_no_stacked_cache():
  """A scanned stack carries its stacked cache through the layer scan and writes each
  layer's slice back where it lies: at most layer-sized copies, none of the whole stack."""
  cfg = gpt.GPTConfig(
    vocab_size=101, block_size=64, n_layer=4, n_head=4, n_embd=64, scan_layers=True
  )
  layer_elements = cfg.n_embd * cfg.block_size
  hlo = decode_loop_hlo(generate.Generator(models.build(cfg, seed=3)), 1)
  assert loop_copies(hlo, 2 * layer_elements) == []


def test_greedy_token_is_argmax_with_its_ties_and_nans():
  nan, inf = float("nan"), float("inf")
  logits = jnp.asarray(
    [
      [0.5, 2.0, 2.0, -1.0],  # a tie: the first maximum
      [-inf, -inf, -inf, -inf],  # nothing finite: index 0
      [1.0, nan, 3.0, nan],  # a NaN wins, as in jnp.argmax
      [-3.0, -2.0, -7.0, -2.5],
    ]
  )
  np.testing.assert_array_equal(generate.greedy_token(logits), [1, 0, 1, 1])
  np.testing.assert_array_equal(generate.greedy_token(logits), jnp.argmax(logits, axis=-1))
  assert generate.greedy_token(logits).dtype == jnp.int32


def test_contexts_hold_the_prompt_then_move_by_half_a_block():
  # A 37-token line and 43 new tokens in a context of 64: the whole line, then from 32.
  assert generate.context_windows(37, 43, 64) == [(0, 27), (32, 16)]
  assert generate.context_windows(2, 150, 64) == [(0, 62), (32, 32), (64, 32), (96, 24)]
  assert generate.context_windows(10, 5, 64) == [(0, 5)]
  # A long prompt keeps its end from a multiple of half a block.
  assert generate.context_windows(100, 4, 64) == [(64, 4)]
  assert generate.context_windows(100, 40, 64) == [(64, 28), (96, 12)]
