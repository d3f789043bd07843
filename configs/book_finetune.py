"""Fine-tune pretrained GPT-2 (default: gpt2-xl, 1.5B parameters) on one book.

  python -m llmjax.main --config=configs/book_finetune.py --config.data.path=book.txt \
      --workdir=runs/book-xl
  python -m llmjax.compare_samples --before=gpt2-xl --after=runs/book-xl \
      --prompt="It was a bright cold day in April"

From Python, `Trainer(out_dir="runs/book-xl", init_from="gpt2-xl", dataset="book.txt")`
starts from this config (the variant named by init_from; a local directory gets the
default and the checkpoint fixes the architecture).

Variants: default = gpt2-xl; `gpt2`, `gpt2-medium`, `gpt2-large` for the smaller
checkpoints; `smoke` = the tiny GPT-2 golden in tests/goldens/gpt2 (257-token byte
vocabulary, so data.tokenizer=char) on the bundled Shakespeare, seconds on a CPU.

Memory plan for gpt2-xl on one 80 GB GPU: float32 parameters (5.8 GiB) and two AdamW
moments (11.6 GiB) are the 17.4 GiB of step arguments; gradients, their accumulation
buffer and activations are temporaries. Compute is bfloat16; every block is
rematerialised (`remat=full`: only each block's input is kept), so a micro-batch of
8 x 1024 tokens fits: XLA's memory analysis of the compiled train step puts the peak at
36.4 GiB (see docs/pretrained.md for all four sizes). `scan_layers` keeps compile time
flat in depth. The mesh puts every device on the `fsdp` axis: on one GPU it changes
nothing, on N GPUs parameters and optimizer state are sharded N ways (same command).
Checkpoints hold parameters and optimizer state (~17 GiB for gpt2-xl), so only the
latest one is kept, plus the best parameters.
"""

import pathlib

from llmjax.config import schema as config_base
from llmjax.util import errors

# hub id -> (n_layer, n_head, n_embd, grad_accum, remat, peak learning rate)
SIZES = {
  "gpt2": (12, 12, 768, 2, "dots_saveable", 1e-4),
  "gpt2-medium": (24, 16, 1024, 2, "dots_saveable", 5e-5),
  "gpt2-large": (36, 20, 1280, 2, "full", 3e-5),
  "gpt2-xl": (48, 25, 1600, 4, "full", 2e-5),
}
GOLDEN_GPT2 = pathlib.Path(__file__).resolve().parent.parent / "tests" / "goldens" / "gpt2"


def get_config(arg=None):
  c = config_base.base_config()
  size = arg if arg in SIZES else "gpt2-xl"
  n_layer, n_head, n_embd, grad_accum, remat, lr = SIZES[size]
  c.name = f"book-finetune-{size}"  # Run name.
  c.model.init_from = size  # Pretrained GPT-2 checkpoint: hub id or local directory.
  c.model.n_layer = n_layer  # Fixed by the checkpoint (must match it).
  c.model.n_head = n_head  # Fixed by the checkpoint.
  c.model.n_embd = n_embd  # Fixed by the checkpoint.
  c.model.mlp_hidden = 4 * n_embd  # Fixed by the checkpoint (n_inner).
  c.model.vocab_size = 50257  # GPT-2 BPE vocabulary.
  c.model.block_size = 1024  # GPT-2's full context.
  c.model.dropout = 0.1  # A book is small next to 1.5B parameters: regularise.
  c.model.dtype = "bfloat16"  # bf16 compute; LayerNorm, softmax and loss stay float32.
  c.model.param_dtype = "float32"  # float32 master weights for AdamW.
  c.model.scan_layers = True  # One compiled block for all layers.
  c.model.remat = remat  # Rematerialise blocks to fit activations (see the module docstring).
  c.data.source = "file"  # One local text file.
  c.data.path = ""  # The book: --config.data.path=book.txt
  c.data.tokenizer = "gpt2"  # GPT-2 BPE, as the checkpoint was trained with.
  c.data.val_fraction = 0.1  # The book's last 10% measures generalisation for early stopping.
  c.mesh.data = 1  # No pure data parallelism...
  c.mesh.fsdp = -1  # ...every device shards parameters and optimizer state (FSDP).
  c.train.steps = 600  # Upper bound; early stopping usually ends the run first.
  c.train.batch_size = 32  # Sequences per optimizer step (32 x 1024 tokens).
  c.train.grad_accum = grad_accum  # Micro-batches per step (gpt2-xl: 8 sequences each).
  c.train.eval_every = 25  # Validation cadence for early stopping.
  c.train.eval_batches = 16  # Validation windows per evaluation (over the held-out tail).
  c.train.patience = 4  # Stop after 4 evaluations without a better validation loss.
  c.train.checkpoint_every = 100  # Checkpoint cadence.
  c.train.keep_checkpoints = 1  # gpt2-xl checkpoints are large: keep the latest (and best).
  c.train.sample_tokens = 100  # Tokens sampled at the end of training.
  c.train.sample_prompt = ""  # Prompt for that sample ("" = from <|endoftext|>).
  c.optim.learning_rate = lr  # Peak learning rate: small, the model is already trained.
  c.optim.warmup_steps = 20  # Short warmup.
  c.optim.min_lr_ratio = 0.1  # Cosine floor.
  c.optim.weight_decay = 0.01  # Light decay on matrices.
  c.optim.grad_clip = 1.0  # Global-norm clipping.
  if arg == "smoke":
    c.name = "book-finetune-smoke"
    c.model.init_from = str(GOLDEN_GPT2)
    c.model.n_layer = 2
    c.model.n_head = 4
    c.model.n_embd = 36
    c.model.mlp_hidden = 52
    c.model.vocab_size = 257
    c.model.block_size = 24
    c.model.dropout = 0.0
    c.model.remat = "full"
    c.data.source = "shakespeare"
    c.data.tokenizer = "char"
    c.train.steps = 30
    c.train.batch_size = 8
    c.train.grad_accum = 2
    c.train.eval_every = 10
    c.train.eval_batches = 2
    c.train.patience = 2
    c.train.checkpoint_every = 10
    c.train.sample_tokens = 16
    c.train.log_every = 5
    c.optim.learning_rate = 3e-3
    c.optim.warmup_steps = 2
  elif arg and arg not in SIZES:
    raise errors.ConfigError(
      f"Unknown variant {arg!r} of configs/book_finetune.py; use {', '.join(SIZES)} or smoke."
    )
  return c
