"""The decode benchmark's yardsticks (`benchmarks/decode_reference.py`) compute what they
claim: the reference loop is greedy decoding with a KV cache (the `Generator`'s tokens), and
the weights floor is the chain of matrix-vector products it describes."""

import pathlib
import sys

import jax
import numpy as np
from flax import nnx

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

from benchmarks import decode_reference  # pylint: disable=wrong-import-position
from llmjax import models  # pylint: disable=wrong-import-position
from llmjax.inference import generate  # pylint: disable=wrong-import-position
from llmjax.models import gpt  # pylint: disable=wrong-import-position

CFG = gpt.GPTConfig(vocab_size=101, block_size=32, n_layer=2, n_head=2, n_embd=32)
PROMPT = [5, 17, 3, 99, 42, 8, 1]


def _model_and_params():
  model = models.build(CFG, seed=3)
  return model, jax.device_get(nnx.to_pure_dict(nnx.state(model)))


def test_reference_loop_decodes_the_generator_s_greedy_tokens():
  model, params = _model_and_params()
  want = generate.Generator(model).generate(
    [PROMPT], 20, params=generate.SamplingParams(temperature=0.0)
  )[0]
  assert decode_reference.ReferenceDecoder(params, CFG).generate(PROMPT, 20) == want


def test_weights_floor_is_the_matrix_vector_chain():
  _, params = _model_and_params()
  # Weights of unit gain, so every product in the chain moves the argmax (at the model's
  # initial scale the blocks barely change the embedding they start from).
  rng = np.random.default_rng(0)
  params = jax.tree.map(
    lambda w: (
      rng.standard_normal(w.shape).astype(np.float32) / np.sqrt(w.shape[0] if w.ndim > 1 else 1)
    ),
    params,
  )
  layers = decode_reference._flatten_layers(params, CFG)  # pylint: disable=protected-access
  wte, d = np.asarray(params["wte"], np.float64), CFG.n_embd
  tokens = [PROMPT[-1]]
  for _ in range(5):
    x = wte[tokens[-1]][None]
    for p in layers:
      qkv = x @ np.asarray(p["qkv_w"])
      x = x + (qkv[:, :d] * qkv[:, d : 2 * d] + qkv[:, 2 * d :]) @ np.asarray(p["proj_w"])
      x = x + np.asarray(jax.nn.gelu(x @ np.asarray(p["fc_w"]))) @ np.asarray(p["out_w"])
    tokens.append(int(np.argmax(x @ wte[: CFG.vocab_size].T)))
  assert decode_reference.WeightsFloor(params, CFG).generate(PROMPT, 6) == tokens
