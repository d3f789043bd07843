"""Writes the encoder parity goldens under tests/goldens/ with torch + transformers.

    pip install torch==2.13.0 transformers   # generation only; tests never import them
    python tests/goldens/make_goldens.py      # from the repository root
    python tests/goldens/make_goldens.py gpt2 # only the named parts

For each family, a tiny randomly initialised Hugging Face model is saved as
`<family>/config.json` + `model.safetensors` (DistilBERT: `pytorch_model.bin`, to cover
the torch-free .bin reader) with `golden.npz`: padded inputs and every hidden state of
the eager-attention reference. DeBERTa v1 (`deberta/`) reads 17 tokens, past its
relative span of 10, and also stores a 7-token batch (`short_*`) inside the span; its
weights carry the hub's `deberta.` prefix and fused `in_proj` attention. Every weight comes from a seeded generator: HF's own
init (zero biases, unit norms) would hide a swapped bias or LayerNorm. Also writes
`deberta_buckets.npz` (DeBERTa's log-bucket table) and `minilm.json` (a few numbers
from the real all-MiniLM-L6-v2 weights).

`gpt2/` is a tiny GPT-2 (GPT2LMHeadModel) in the hub's layout (no `transformer.` prefix,
causal-mask buffers kept) with `golden.npz`: token ids and the reference logits. Its
vocabulary is 257 (bytes + end of text), so it also serves as a tiny pretrained model
for the `char` tokenizer (configs/book_finetune.py:smoke).
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers.models.deberta_v2 import modeling_deberta_v2

ROOT = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parents[1]))

BATCH, LENGTH = 3, 13
REAL_LENGTHS = (13, 9, 5)  # rows 1 and 2 are right-padded
# name -> [(length, real lengths)]: the first batch is `golden.npz`'s main one, the others
# are stored as `short_*` (one extra batch at most).
SHAPES = {"deberta": [(17, (17, 11, 4)), (7, (7, 5))]}

FAMILIES = {
  # head_dim 9; saved with a `bert.` prefix, legacy gamma/beta names and an MLM bias.
  "bert": transformers.BertConfig(
    vocab_size=97,
    hidden_size=36,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=52,
    max_position_embeddings=24,
    type_vocab_size=2,
  ),
  # head_dim 6; saved as pytorch_model.bin.
  "distilbert": transformers.DistilBertConfig(
    vocab_size=97, dim=30, n_layers=2, n_heads=5, hidden_dim=44, max_position_embeddings=24
  ),
  # pad_token_id 1: position ids start at 2 and skip padding.
  "roberta": transformers.RobertaConfig(
    vocab_size=97,
    hidden_size=24,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=40,
    max_position_embeddings=LENGTH + 3,
    type_vocab_size=1,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
  ),
  # embedding_size 20 != hidden_size 36, head_dim 12.
  "electra": transformers.ElectraConfig(
    vocab_size=97,
    embedding_size=20,
    hidden_size=36,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=48,
    max_position_embeddings=24,
  ),
  # 3 layers over 2 shared groups of 2 inner layers (group of layer i: int(i / 1.5)),
  # embedding_size 16, head_dim 10, gelu_new.
  "albert": transformers.AlbertConfig(
    vocab_size=97,
    embedding_size=16,
    hidden_size=30,
    num_hidden_layers=3,
    num_hidden_groups=2,
    inner_group_num=2,
    num_attention_heads=3,
    intermediate_size=40,
    max_position_embeddings=24,
    hidden_act="gelu_new",
  ),
  # DeBERTa-v3 layout: log buckets, shared position keys, normed relative table,
  # no absolute positions or token types; embedding_size 28 != hidden_size 36.
  "deberta_v3": transformers.DebertaV2Config(
    vocab_size=97,
    hidden_size=36,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=52,
    max_position_embeddings=24,
    relative_attention=True,
    position_buckets=8,
    pos_att_type="p2c|c2p",
    share_att_key=True,
    norm_rel_ebd="layer_norm",
    position_biased_input=False,
    type_vocab_size=0,
    embedding_size=28,
  ),
  # DeBERTa-v2-xlarge layout: separate position projections, plain relative distances
  # clipped at 6, a grouped convolution after layer 0, head_dim 10, relu.
  "deberta_v2": transformers.DebertaV2Config(
    vocab_size=97,
    hidden_size=30,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=40,
    max_position_embeddings=24,
    relative_attention=True,
    max_relative_positions=6,
    pos_att_type="c2p|p2c",
    share_att_key=False,
    position_biased_input=True,
    type_vocab_size=2,
    conv_kernel_size=3,
    conv_groups=2,
    conv_act="gelu",
    hidden_act="relu",
  ),
  # DeBERTa v1 (microsoft/deberta-base layout: no absolute positions or token types):
  # 3 heads of 11, vocabulary 97, relative span 10 (shorter than the 17 tokens read),
  # embedding_size 26 != hidden_size 33 (an unbiased projection).
  "deberta": transformers.DebertaConfig(
    vocab_size=97,
    hidden_size=33,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=50,
    max_position_embeddings=24,
    relative_attention=True,
    max_relative_positions=10,
    pos_att_type="c2p|p2c",
    position_biased_input=False,
    type_vocab_size=0,
    embedding_size=26,
    layer_norm_eps=1e-7,
  ),
}


def randomise(model: torch.nn.Module, seed: int) -> None:
  """Sets every parameter from a seeded generator, at scales that keep attention peaked."""
  rng = np.random.default_rng(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      shape = tuple(p.shape)
      if p.ndim == 1 and name.endswith("weight"):  # LayerNorm scales
        value = 1.0 + 0.2 * rng.standard_normal(shape)
      elif p.ndim == 1:  # biases
        value = 0.1 * rng.standard_normal(shape)
      elif "embed" in name and p.ndim == 2 and "proj" not in name:
        value = rng.standard_normal(shape)
      else:  # Linear (out, in) or Conv1d (out, in / groups, k)
        fan_in = int(np.prod(shape[1:]))
        value = rng.standard_normal(shape) / np.sqrt(fan_in)
      p.copy_(torch.as_tensor(value, dtype=p.dtype))


def inputs(
  cfg, seed: int, length: int = LENGTH, real_lengths: tuple[int, ...] = REAL_LENGTHS
) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  pad = cfg.pad_token_id
  batch = len(real_lengths)
  ids = rng.integers(pad + 1, cfg.vocab_size, size=(batch, length))
  mask = np.zeros((batch, length), np.int64)
  for row, n in enumerate(real_lengths):
    mask[row, :n] = 1
  ids = np.where(mask == 1, ids, pad)
  out = {"input_ids": ids, "attention_mask": mask}
  if getattr(cfg, "type_vocab_size", 0) > 1:
    out["token_type_ids"] = rng.integers(0, cfg.type_vocab_size, size=(batch, length)) * mask
  return out


def make_family(name: str, cfg, seed: int) -> None:
  out_dir = ROOT / name
  if out_dir.exists():
    shutil.rmtree(out_dir)
  model = transformers.AutoModel.from_config(cfg, attn_implementation="eager")
  if hasattr(model, "pooler"):  # not part of the encoder body; keeps the files small
    model.pooler = None
  model.eval()
  randomise(model, seed)
  arrays = {}
  for i, (length, real_lengths) in enumerate(SHAPES.get(name, [(LENGTH, REAL_LENGTHS)])):
    feed = inputs(cfg, seed + 1 + i, length, real_lengths)
    with torch.no_grad():
      result = model(**{k: torch.as_tensor(v) for k, v in feed.items()}, output_hidden_states=True)
    hidden = np.stack([h.numpy() for h in result.hidden_states]).astype(np.float32)
    np.testing.assert_array_equal(hidden[-1], result.last_hidden_state.numpy())
    prefix = "short_" if i else ""
    arrays[prefix + "hidden_states"] = hidden
    arrays.update({prefix + k: v.astype(np.int32) for k, v in feed.items()})

  model.save_pretrained(out_dir)
  weights_path = out_dir / "model.safetensors"
  tensors = load_file(weights_path)
  if name == "bert":
    renamed = {}
    for key, value in tensors.items():
      key = "bert." + key
      key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
        "LayerNorm.bias", "LayerNorm.beta"
      )
      renamed[key] = value
    renamed["cls.predictions.bias"] = torch.zeros(cfg.vocab_size)
    save_file(renamed, weights_path, metadata={"format": "pt"})
  elif name == "deberta":  # The hub's layout: a `deberta.` prefix and an MLM head beside it.
    renamed = {"deberta." + key: value for key, value in tensors.items()}
    renamed["lm_predictions.lm_head.bias"] = torch.zeros(cfg.vocab_size)
    save_file(renamed, weights_path, metadata={"format": "pt"})
  elif name == "distilbert":
    weights_path.unlink()
    torch.save(
      {k: v.clone().contiguous() for k, v in tensors.items()}, out_dir / "pytorch_model.bin"
    )
  for extra in out_dir.iterdir():
    if extra.name not in ("config.json", "model.safetensors", "pytorch_model.bin"):
      extra.unlink()
  np.savez_compressed(out_dir / "golden.npz", **arrays)
  size = sum(p.stat().st_size for p in out_dir.iterdir())
  print(f"{name:12s} {len(result.hidden_states)} hidden states, {size / 1024:.0f} KiB")


def make_buckets() -> None:
  rel = torch.arange(-1500, 1501)
  tables = {}
  for bucket_size, max_position in ((256, 512), (8, 24), (64, 1024)):
    got = modeling_deberta_v2.make_log_bucket_position(rel, bucket_size, max_position)
    tables[f"b{bucket_size}_m{max_position}"] = got.to(torch.int16).numpy()
  np.savez_compressed(ROOT / "deberta_buckets.npz", relative=rel.numpy().astype(np.int16), **tables)


MINILM_SENTENCES = (
  "A man is playing a guitar.",
  "Someone plays an acoustic guitar.",
  "The stock market fell sharply today.",
)


def make_minilm() -> None:
  from llmjax.util import assets  # pylint: disable=import-outside-toplevel

  model_dir = assets.minilm_dir()
  tokenizer = transformers.BertTokenizer(str(model_dir / "vocab.txt"), do_lower_case=True)
  batch = tokenizer(list(MINILM_SENTENCES), padding=True, return_tensors="pt")
  model = transformers.BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()
  with torch.no_grad():
    last = model(**batch).last_hidden_state
  mask = batch["attention_mask"][..., None].float()
  pooled = (last * mask).sum(1) / mask.sum(1)
  pooled = torch.nn.functional.normalize(pooled, dim=-1)
  record = {
    "sentences": MINILM_SENTENCES,
    "input_ids": batch["input_ids"].tolist(),
    "pooled_first8": pooled[:, :8].tolist(),
    "cosine_paraphrase": float(pooled[0] @ pooled[1]),
    "cosine_unrelated": float(pooled[0] @ pooled[2]),
    "last_hidden_cls_first4": last[:, 0, :4].tolist(),
  }
  (ROOT / "minilm.json").write_text(json.dumps(record) + "\n")
  print("minilm", record["cosine_paraphrase"], record["cosine_unrelated"])


# n_inner 52 (not 4 * 36), head_dim 9, vocabulary 257 (padded to 320 in llmjax).
GPT2 = transformers.GPT2Config(
  vocab_size=257,
  n_positions=24,
  n_embd=36,
  n_layer=2,
  n_head=4,
  n_inner=52,
  activation_function="gelu_new",
  bos_token_id=256,
  eos_token_id=256,
)


def make_gpt2(seed: int = 700) -> None:
  out_dir = ROOT / "gpt2"
  if out_dir.exists():
    shutil.rmtree(out_dir)
  model = transformers.GPT2LMHeadModel._from_config(GPT2, attn_implementation="eager").eval()
  rng = np.random.default_rng(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      shape = tuple(p.shape)
      if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
        value = 1.0 + 0.2 * rng.standard_normal(shape)
      elif p.ndim == 1:
        value = 0.1 * rng.standard_normal(shape)
      elif name.endswith(("wte.weight", "wpe.weight")):
        value = 0.5 * rng.standard_normal(shape)
      else:  # Conv1D: (in, out)
        value = rng.standard_normal(shape) / np.sqrt(shape[0])
      p.copy_(torch.as_tensor(value, dtype=p.dtype))
  ids = rng.integers(0, GPT2.vocab_size, size=(BATCH, LENGTH))
  with torch.no_grad():
    logits = model(torch.as_tensor(ids)).logits.numpy().astype(np.float32)
  # The hub layout: GPT2Model names, plus the causal-mask buffers old exports carry.
  state = {
    k[len("transformer.") :]: v.contiguous()
    for k, v in model.state_dict().items()
    if k.startswith("transformer.")
  }
  tril = torch.tril(torch.ones(GPT2.n_positions, GPT2.n_positions)).view(
    1, 1, GPT2.n_positions, GPT2.n_positions
  )
  for i in range(GPT2.n_layer):
    state[f"h.{i}.attn.bias"] = tril.clone()
  out_dir.mkdir()
  save_file(state, out_dir / "model.safetensors", metadata={"format": "pt"})
  GPT2.save_pretrained(out_dir)
  np.savez_compressed(out_dir / "golden.npz", input_ids=ids.astype(np.int32), logits=logits)
  size = sum(p.stat().st_size for p in out_dir.iterdir())
  print(f"gpt2         logits {logits.shape}, {size / 1024:.0f} KiB")


def main() -> None:
  torch.manual_seed(0)
  parts = sys.argv[1:] or [*FAMILIES, "gpt2", "buckets", "minilm"]
  for seed, (name, cfg) in enumerate(FAMILIES.items()):
    if name in parts:
      make_family(name, cfg, seed=100 * seed)
  if "gpt2" in parts:
    make_gpt2()
  if "buckets" in parts:
    make_buckets()
  if "minilm" in parts:
    make_minilm()
  total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
  print(f"total {total / 1024:.0f} KiB under {ROOT}")


if __name__ == "__main__":
  main()
