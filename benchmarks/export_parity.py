r"""Exported GPTs in `transformers`: the same logits (fp32) and the same token ids.

  pip install -e '.[bench]' && python -m benchmarks.export_parity

Builds small llmjax models (GPT-2 BPE vocabulary padded to 50304; no biases; scanned
blocks; a progressive stage-2 model with non-zero LoRA adapters), exports each with
`llmjax.pretrained.hf_export.export`, loads the directory with
`transformers.GPT2LMHeadModel.from_pretrained` (eager attention, float32) and compares
the logits of random tokens; the exported GPT-2 tokenizer is loaded with
`GPT2TokenizerFast.from_pretrained` and compared with llmjax's ids on a text sample.
Prints one JSON object; exits 1 when a difference exceeds 1e-4.
"""

from __future__ import annotations

import json
import sys
import tempfile

import jax.numpy as jnp
import numpy as np
from flax import nnx

from llmjax.data import tokenizer as tokenizer_lib
from llmjax.models import gpt, progressive
from llmjax.pretrained import hf_export

TOLERANCE = 1e-4
SHAPE = dict(vocab_size=50257, block_size=64, n_layer=2, n_head=4, n_embd=64)
TEXT = "It was the best of times, it was the worst of times;\n\tünïcödé 東京 <|endoftext|> 42."


def _models():
  yield "gpt", gpt.GPT(gpt.GPTConfig(**SHAPE), rngs=nnx.Rngs(0))
  yield "gpt_no_bias", gpt.GPT(gpt.GPTConfig(**SHAPE, bias=False), rngs=nnx.Rngs(1))
  yield "gpt_scanned", gpt.GPT(gpt.GPTConfig(**SHAPE, scan_layers=True), rngs=nnx.Rngs(2))
  cfg = progressive.ProgressiveConfig(
    **{**SHAPE, "n_layer": 4}, stage=2, stage_groups=(1, 2, 4), lora_rank=4
  )
  model = progressive.ProgressiveGPT(cfg, rngs=nnx.Rngs(3))
  for block in model.h:
    for name in ("lora_qkv_b", "lora_proj_b"):
      var = getattr(block.attn, name)
      var[...] = jnp.full(var[...].shape, 0.02, var[...].dtype)
  yield "progressive_stage2_lora", model


def main() -> int:
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel

  tok = tokenizer_lib.get_tokenizer("gpt2")
  tokens = np.random.default_rng(0).integers(0, SHAPE["vocab_size"], (2, 32)).astype(np.int32)
  results = {
    "transformers": transformers.__version__,
    "torch": torch.__version__,
    "tolerance": TOLERANCE,
    "models": {},
  }
  ok = True
  with tempfile.TemporaryDirectory() as tmp:
    for name, model in _models():
      out = hf_export.export(model, tok, f"{tmp}/{name}")
      hf = transformers.GPT2LMHeadModel.from_pretrained(
        out, attn_implementation="eager", torch_dtype=torch.float32
      ).eval()
      with torch.no_grad():
        theirs = hf(torch.from_numpy(tokens.astype(np.int64))).logits.numpy()
      ours = np.asarray(model(jnp.asarray(tokens)))
      diff = float(np.abs(theirs - ours).max())
      results["models"][name] = {"max_abs_logit_diff": diff, "vocab": int(theirs.shape[-1])}
      ok &= diff <= TOLERANCE and theirs.shape == ours.shape
    fast = transformers.GPT2TokenizerFast.from_pretrained(f"{tmp}/gpt")
    same_ids = fast(TEXT)["input_ids"] == tok.encode(TEXT, allow_eot=True)
    results["tokenizer_same_ids"] = bool(same_ids)
    ok &= same_ids
  results["ok"] = bool(ok)
  print(json.dumps(results, indent=2))
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
