"""Progressive diverging GPT: a 12-layer GPT-2 grown in stages from shared blocks.

With the default `stage_groups=(3, 6, 12)` and `n_layer=12`:

1. 3 groups of 4 layers: each group is one attention+FF block applied 4 times in a row
   (its gradient is the sum over the 4 uses).
2. 6 groups of 2 layers: each block starts as a copy of its stage-1 block; attention is
   trained through LoRA (`lora.py`) on the frozen copied weights, LayerNorms and FF fully.
3. 12 blocks, each a copy of its stage-2 block with the adapters merged into new frozen
   attention weights and fresh adapters; FF fully.

`grow_params` performs a transition on pure-dict parameters. A copied block computes what
its source computed and a fresh adapter adds exactly zero, so the model computes the same
logits right after a transition as right before it (`tests/progressive_test.py`).
`to_gpt` folds the adapters into a plain `gpt.GPT` for inference.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from flax import nnx

from llmjax.models import gpt, layers
from llmjax.models import lora as lora_lib
from llmjax.util import errors


@dataclasses.dataclass(frozen=True)
class ProgressiveConfig(gpt.GPTBaseConfig):
  """`model.arch='progressive'`: the GPT stack plus the stages it grows through and the
  adapters of stages 2 on. Each field is a key of the `model` config section; its comment
  is the key's help text. (The training schedule, `progressive.stage_fractions`, is the
  job's.)"""

  ARCH: ClassVar[str] = "progressive"
  scan_layers: ClassVar[bool] = False  # Blocks are shared between layers: never scanned.

  n_layer: int = 12  # Layers of the final model (the last stage has this many blocks).
  stage_groups: tuple[int, ...] = (3, 6, 12)  # Blocks per stage; each divides n_layer and the next.
  stage: int = 0  # Stage to build, 1-based (0 = the last); the progressive job sets it.
  lora_rank: int = 8  # Adapter rank r (stages 2 on train attention through adapters).
  lora_alpha: float = 16.0  # Adapter scale numerator: the update is (alpha / rank) * A @ B.
  lora_targets: str = "qkv,proj"  # Attention projections with adapters: qkv, proj or both.
  lora_fused: bool = True  # Merge adapters into the weight in each step (one matmul) vs x@A@B.

  def __post_init__(self):
    groups = self.stage_groups
    if not 0 <= self.stage <= len(groups):
      raise errors.ConfigError(
        f"model.stage={self.stage} must be in 1..{len(groups)} (one per entry of "
        f"model.stage_groups={groups}), or 0 for the last."
      )
    for i, g in enumerate(groups):
      if g < 1 or self.n_layer % g or (i and g % groups[i - 1]):
        raise errors.ConfigError(
          f"model.stage_groups={groups} must each divide model.n_layer="
          f"{self.n_layer} and each divide the next (blocks are copied)."
        )
    if self.lora_rank < 1:
      raise errors.ConfigError(f"model.lora_rank={self.lora_rank} must be >= 1.")
    targets = lora_lib.parse_targets(self.lora_targets)
    if not targets or any(t not in lora_lib.TARGETS for t in targets):
      raise errors.ConfigError(
        f"model.lora_targets={self.lora_targets!r} must name one or more of "
        f"{', '.join(lora_lib.TARGETS)} (comma-separated)."
      )

  @classmethod
  def from_config(cls, model_cfg) -> ProgressiveConfig:
    cfg = super().from_config(model_cfg)
    return dataclasses.replace(
      cfg,
      stage_groups=tuple(int(g) for g in cfg.stage_groups),
      lora_targets=",".join(lora_lib.parse_targets(cfg.lora_targets)),
    )

  @property
  def stage_built(self) -> int:
    """The stage this config builds (1-based): `stage`, or the last when it is 0."""
    return self.stage or len(self.stage_groups)

  @property
  def n_groups(self) -> int:
    return self.stage_groups[self.stage_built - 1]

  @property
  def repeats(self) -> int:
    """How many consecutive layers share each block in this stage."""
    return self.n_layer // self.n_groups

  def lora_config(self) -> lora_lib.LoraConfig:
    return lora_lib.LoraConfig(
      rank=self.lora_rank,
      alpha=self.lora_alpha,
      targets=lora_lib.parse_targets(self.lora_targets),
      fused=self.lora_fused,
    )


class ProgressiveGPT(gpt.GPT):
  """The stage-`cfg.stage` model: `n_groups` blocks, each applied `repeats` times."""

  def __init__(self, cfg: ProgressiveConfig, *, rngs: nnx.Rngs):
    # Not GPT.__init__: the blocks differ per stage. pylint: disable=super-init-not-called
    self.cfg = cfg
    v, d = cfg.padded_vocab_size, cfg.n_embd
    self.wte = layers.normal_param(rngs, (v, d), 0.02, cfg.param_dtype, ("vocab", "embed"))
    self.wpe = layers.normal_param(
      rngs, (cfg.block_size, d), 0.01, cfg.param_dtype, (None, "embed")
    )
    block_cfg = cfg.block_config()
    if cfg.stage_built == 1:
      blocks = [layers.Block(block_cfg, rngs=rngs) for _ in range(cfg.n_groups)]
    else:
      blocks = [
        lora_lib.LoraBlock(block_cfg, cfg.lora_config(), rngs=rngs) for _ in range(cfg.n_groups)
      ]
    self.h = nnx.List(blocks)
    self.ln_f = layers.LayerNorm(d, bias=cfg.bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype)

  def layer_blocks(self) -> list[nnx.Module]:
    """The block applied at each of the `n_layer` layers."""
    return [self.h[i // self.cfg.repeats] for i in range(self.cfg.n_layer)]


def grow_params(
  prev: dict, prev_cfg: ProgressiveConfig, fresh: dict, next_cfg: ProgressiveConfig
) -> dict:
  """Stage `prev_cfg.stage` params -> stage `next_cfg.stage` params (pure dicts).

  `fresh` is a freshly initialised next-stage model's params: it supplies the new adapters
  (A random, B zero). Everything else is copied: embeddings and the final LayerNorm as
  they are; block j takes LayerNorms and MLP from the block it splits off from, and as its
  frozen attention that block's attention with any adapters merged in.
  """
  ratio = next_cfg.n_groups // prev_cfg.n_groups
  out = {"wte": prev["wte"], "wpe": prev["wpe"], "ln_f": prev["ln_f"], "h": {}}
  prev_lora = prev_cfg.lora_config()
  for j in range(next_cfg.n_groups):
    src = prev["h"][j // ratio]
    block = {name: src[name] for name in ("ln_1", "ln_2", "mlp")}
    attn = dict(fresh["h"][j]["attn"])
    attn.update(lora_lib.merge_attention(src["attn"], prev_lora))
    block["attn"] = attn
    out["h"][j] = block
  return out


def to_gpt(model: ProgressiveGPT) -> gpt.GPT:
  """A plain `n_layer`-block GPT computing the same function (adapters merged)."""
  cfg = model.cfg
  gpt_cfg = gpt.GPTConfig(
    **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(gpt.GPTBaseConfig)}
  )
  graphdef, _ = nnx.split(nnx.eval_shape(lambda: gpt.GPT(gpt_cfg, rngs=nnx.Rngs(0))))
  params = nnx.to_pure_dict(nnx.state(model))
  lora = cfg.lora_config()
  blocks = {}
  for i in range(cfg.n_layer):
    src = params["h"][i // cfg.repeats]
    blocks[i] = {
      "ln_1": src["ln_1"],
      "ln_2": src["ln_2"],
      "mlp": src["mlp"],
      "attn": lora_lib.merge_attention(src["attn"], lora),
    }
  merged: dict[str, Any] = {
    "wte": params["wte"],
    "wpe": params["wpe"],
    "ln_f": params["ln_f"],
    "h": blocks,
  }
  return nnx.merge(graphdef, merged)
