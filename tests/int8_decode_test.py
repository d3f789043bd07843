"""Int8 decoding (`llmjax.inference.quantize`): the quantized model equals a NumPy reference
of itself, agrees with float32, and its decode loop reads the int8 weights as they lie."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llmjax import models
from llmjax.inference import generate, quantize
from llmjax.models import gpt
from llmjax.util import errors

CFG = gpt.GPTConfig(vocab_size=101, block_size=64, n_layer=2, n_head=2, n_embd=32)
GREEDY = generate.SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def model():
  return models.build(CFG, seed=3)


def np_quantize_weight(w):
  amax = np.abs(w).max(axis=0)
  scale = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
  return np.clip(np.round(w / scale), -127, 127).astype(np.int8), scale


def np_quantize_rows(x):
  amax = np.abs(x).max(axis=-1, keepdims=True)
  xs = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
  return np.round(x / xs).astype(np.int8), xs


def np_qmatmul(x, q, scale):
  """The int8 x int8 product in NumPy: exact int32 accumulation, then the two scales."""
  xq, xs = np_quantize_rows(x)
  acc = xq.astype(np.int32) @ q.astype(np.int32)
  return acc.astype(np.float32) * xs * scale


def np_layer_norm(x, p):
  mean = x.mean(-1, keepdims=True)
  var = np.square(x - mean).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + np.float32(1e-5)) * p["scale"] + p["bias"]


def np_gelu(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def np_greedy(params, prompt, n):
  """Greedy decoding of the quantized GPT by full recomputation, NumPy float32, from the
  float32 parameters (quantized here with NumPy)."""
  d, h = CFG.n_embd, CFG.n_head
  k = d // h
  wte_q, wte_s = np_quantize_weight(params["wte"].T)
  layers = []
  for i in range(CFG.n_layer):
    p = params["h"][i]
    layers.append(
      {
        "ln_1": p["ln_1"],
        "ln_2": p["ln_2"],
        "qkv": np_quantize_weight(p["attn"]["c_attn"].reshape(d, 3 * d)),
        "qkv_b": p["attn"]["c_attn_bias"].reshape(3 * d),
        "proj": np_quantize_weight(p["attn"]["c_proj"].reshape(d, d)),
        "proj_b": p["attn"]["c_proj_bias"],
        "fc": np_quantize_weight(p["mlp"]["c_fc"]),
        "fc_b": p["mlp"]["c_fc_bias"],
        "out": np_quantize_weight(p["mlp"]["c_proj"]),
        "out_b": p["mlp"]["c_proj_bias"],
      }
    )
  seq = list(prompt)
  for _ in range(n):
    t = len(seq)
    x = wte_q.T[seq].astype(np.float32) * wte_s[seq][:, None] + params["wpe"][:t]
    for ly in layers:
      qkv = np_qmatmul(np_layer_norm(x, ly["ln_1"]), *ly["qkv"]) + ly["qkv_b"]
      q, kk, v = (qkv[:, j * d : (j + 1) * d].reshape(t, h, k).transpose(1, 0, 2) for j in range(3))
      scores = q @ kk.transpose(0, 2, 1) / np.float32(np.sqrt(k))
      scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
      probs = np.exp(scores - scores.max(-1, keepdims=True))
      probs /= probs.sum(-1, keepdims=True)
      y = (probs @ v).transpose(1, 0, 2).reshape(t, d)
      x = x + np_qmatmul(y, *ly["proj"]) + ly["proj_b"]
      hid = np_gelu(np_qmatmul(np_layer_norm(x, ly["ln_2"]), *ly["fc"]) + ly["fc_b"])
      x = x + np_qmatmul(hid, *ly["out"]) + ly["out_b"]
    logits = np_qmatmul(np_layer_norm(x[-1:], params["ln_f"]), wte_q, wte_s)
    seq.append(int(np.argmax(logits[0, : CFG.vocab_size])))
  return seq[len(prompt) :]


def test_weights_are_quantized_per_output_channel_as_numpy_does(model):
  q = quantize.quantize_model(model)
  w = np.asarray(model.h[0].mlp.c_fc[...])
  ref_q, ref_s = np_quantize_weight(w)
  np.testing.assert_array_equal(np.asarray(q.h[0].mlp.c_fc_q[...]), ref_q)
  np.testing.assert_allclose(np.asarray(q.h[0].mlp.c_fc_scale[...]), ref_s, rtol=1e-6)
  assert q.h[0].mlp.c_fc_q[...].dtype == jnp.int8
  # The tied table: one scale per vocabulary row, shared by the lookup and the head.
  ref_q, ref_s = np_quantize_weight(np.asarray(model.wte[...]).T)
  np.testing.assert_array_equal(np.asarray(q.wte_q[...]), ref_q.T)
  np.testing.assert_allclose(np.asarray(q.wte_scale[...]), ref_s, rtol=1e-6)
  # Dequantized weights are within half a step of the originals.
  err = np.abs(ref_q.T.astype(np.float32) * ref_s[:, None] - np.asarray(model.wte[...]))
  assert np.all(err <= ref_s[:, None] / 2 + 1e-8)


@pytest.mark.parametrize("rows", [1, 3])
def test_quantized_matmul_accumulates_exactly_in_int32(rows):
  """The integers (quantized activations, int32 sums) equal NumPy's exactly; the float
  scales applied to them agree to float32 rounding."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((rows, 48)).astype(np.float32)
  q = rng.integers(-127, 128, (48, 40)).astype(np.int8)
  s = rng.uniform(0.01, 0.1, 40).astype(np.float32)
  xq, xs = quantize.quantize_rows(jnp.asarray(x))
  ref_xq, ref_xs = np_quantize_rows(x)
  np.testing.assert_array_equal(np.asarray(xq), ref_xq)
  np.testing.assert_allclose(np.asarray(xs), ref_xs, rtol=1e-6)
  acc = jax.lax.dot_general(
    xq, jnp.asarray(q), (((1,), (0,)), ((), ())), preferred_element_type=jnp.int32
  )
  np.testing.assert_array_equal(np.asarray(acc), ref_xq.astype(np.int32) @ q.astype(np.int32))
  got = np.asarray(quantize.quantized_matmul(jnp.asarray(x), jnp.asarray(q), jnp.asarray(s)))
  np.testing.assert_allclose(got, np_qmatmul(x, q, s), rtol=1e-6, atol=1e-6)
  got_t = quantize.quantized_matmul(
    jnp.asarray(x), jnp.asarray(q.T), jnp.asarray(s), transposed=True
  )
  np.testing.assert_array_equal(np.asarray(got_t), got)


def test_int8_greedy_equals_a_numpy_reference_of_the_quantized_model(model):
  params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
  prompt = [int(x) for x in np.random.default_rng(0).integers(0, CFG.vocab_size, 7)]
  out = generate.Generator(model, dtype="int8").generate([prompt], 24, params=GREEDY)[0]
  assert out == np_greedy(params, prompt, 24)


@pytest.mark.parametrize("scan", [False, True])
def test_int8_greedy_agrees_with_float32(scan):
  """A random model's logits are nearly flat, the hardest case for agreement; this one
  agrees on every token (the figure at the benchmark's shape is in docs/performance.md)."""
  m = models.build(gpt.GPTConfig(**{**CFG.__dict__, "scan_layers": scan}), seed=3)
  prompts = [[int(x) for x in np.random.default_rng(s).integers(0, 101, 7)] for s in range(4)]
  f32 = generate.Generator(m).generate(prompts, 40, params=GREEDY)
  gen8 = generate.Generator(m, dtype="int8")
  int8 = gen8.generate(prompts, 40, params=GREEDY)
  agreement = np.mean([a == b for x, y in zip(f32, int8) for a, b in zip(x, y)])
  assert agreement >= 0.9
  assert gen8.compilations == 2  # One prefill and one decode loop, as in float32.
  tokens = jnp.asarray(prompts)
  np.testing.assert_allclose(quantize.quantize_model(m)(tokens), m(tokens), atol=0.02)


def wide_values(hlo_text: str, min_elements: int) -> list[str]:
  """Instructions of a compiled module that produce a float32 or int32 array of at least
  `min_elements` elements (a dequantized copy of a weight would be one, inside the loop or
  hoisted out of it)."""
  found = []
  for line in hlo_text.splitlines():
    op = re.search(r"= (f32|s32)\[([\d,]*)\]\S* (\S+)\(", line)
    if op and op.group(3) not in ("parameter", "get-tuple-element", "tuple", "bitcast"):
      if int(np.prod([int(d) for d in op.group(2).split(",") if d])) >= min_elements:
        found.append(line.strip()[:100])
  return found


@pytest.mark.parametrize("batch", [1, 2])
def test_int8_decode_loop_never_dequantizes_a_weight(batch):
  """The decode loop's dots read the int8 weights as they are: no float32 or int32 copy of
  a weight, per token or once per call (XLA:CPU makes one for an int8 x float32 dot, and for an int8 dot with
  a single row, which is why one row is padded to two)."""
  # A layer's cache (batch x 128 x 32) is smaller than the smallest weight (128 x 128).
  cfg = gpt.GPTConfig(vocab_size=101, block_size=32, n_layer=1, n_head=2, n_embd=128)
  gen = generate.Generator(models.build(cfg, seed=3), dtype="int8")
  logits, cache = gen._prefill(gen.state, jnp.zeros((batch, 16), jnp.int32), jnp.int32(4))
  args = (jnp.int32(4), jnp.int32(8), jax.random.key(0), jnp.float32(0), jnp.int32(0), 1.0)
  hlo = gen._decode_loop.lower(gen, gen.state, cache, logits, *args).compile().as_text()
  assert wide_values(hlo, cfg.n_embd * cfg.n_embd) == []
  # The check does see a dequantized weight: an int8 x float32 dot in a loop.
  w8 = gen.state["h"][0]["mlp"]["c_fc_q"][...]
  dequantizing = jax.jit(
    lambda x, w: jax.lax.fori_loop(0, 3, lambda i, x: x + (x @ w.astype(jnp.float32))[:, :128], x)
  )
  text = dequantizing.lower(jnp.ones((batch, 128)), w8).compile().as_text()
  assert wide_values(text, cfg.n_embd * cfg.n_embd)


def test_int8_refuses_models_it_cannot_quantize(model):
  with pytest.raises(errors.SamplingError, match=r"dtype='int8' quantizes a float32 model"):
    quantize.quantize_model(generate.cast_model(model, "bfloat16"))
  with pytest.raises(errors.SamplingError, match=r"is not an inference dtype; .*int8\."):
    generate.inference_model(model, "int4")
