"""Low-rank adapters (LoRA) on attention: frozen base weights plus a trained update A @ B.

`LoraAttention` is a `layers.Attention` whose query/key/value and output projections use
W0 + (alpha / rank) * A @ B, with W0 frozen (`jax.lax.stop_gradient`) and B initialised to
zero, so a fresh adapter leaves the function unchanged. Two equivalent ways to compute it:

* fused (default): merge the update into the weight inside each forward pass and do one
  matmul. The extra work is a d x r x 3d product per projection, independent of the batch,
  so a step costs about what the full-rank model's step costs.
* unfused: x @ W0 + (x @ A) @ B, the textbook form; no gradient for W0 is computed at all.

`merge_attention` folds the adapters into plain weights for inference; `frozen_mask` tells
an optimizer which parameters (the base weights next to adapters) must not move.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from llmjax.models import layers
from llmjax.util import errors

TARGETS = ("qkv", "proj")  # Attention projections that can carry an adapter.
BASE_NAMES = ("c_attn", "c_attn_bias", "c_proj", "c_proj_bias")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Adapter hyperparameters: `lora.rank`, `lora.alpha`, `lora.targets`, `lora.fused`."""

  rank: int = 8
  alpha: float = 16.0
  targets: tuple[str, ...] = TARGETS
  fused: bool = True

  def __post_init__(self):
    if self.rank < 1:
      raise errors.ConfigError(f"lora.rank={self.rank} must be >= 1.")
    unknown = [t for t in self.targets if t not in TARGETS]
    if unknown or not self.targets:
      raise errors.ConfigError(
        f"lora.targets={','.join(self.targets)!r} must name one or more of "
        f"{', '.join(TARGETS)} (comma-separated)."
      )

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


def parse_targets(text) -> tuple[str, ...]:
  """'qkv,proj' (or a sequence) -> ('qkv', 'proj')."""
  items = text.split(",") if isinstance(text, str) else list(text)
  return tuple(t.strip() for t in items if t.strip())


def merged_qkv(w_Dx3xHxK, a_DxR, b_Rx3xHxK, scale: float):
  return w_Dx3xHxK + scale * jnp.einsum("dr,rchk->dchk", a_DxR, b_Rx3xHxK)


def merged_proj(w_HxKxD, a_HxKxR, b_RxD, scale: float):
  return w_HxKxD + scale * jnp.einsum("hkr,rd->hkd", a_HxKxR, b_RxD)


class LoraAttention(layers.Attention):
  """Causal self-attention with frozen projections and trained low-rank adapters."""

  def __init__(self, cfg: layers.BlockConfig, lora: LoraConfig, *, rngs: nnx.Rngs):
    super().__init__(cfg, rngs=rngs)
    d, h, k, r = cfg.n_embd, cfg.n_head, cfg.head_dim, lora.rank
    self.lora = lora
    qkv, proj = "qkv" in lora.targets, "proj" in lora.targets
    self.lora_qkv_a = nnx.data(
      layers.normal_param(rngs, (d, r), 1 / math.sqrt(d), cfg.param_dtype, ("embed", None))
      if qkv
      else None
    )
    self.lora_qkv_b = nnx.data(
      layers.zeros_param((r, 3, h, k), cfg.param_dtype, (None, None, "heads", "head_dim"))
      if qkv
      else None
    )
    self.lora_proj_a = nnx.data(
      layers.normal_param(
        rngs, (h, k, r), 1 / math.sqrt(h * k), cfg.param_dtype, ("heads", "head_dim", None)
      )
      if proj
      else None
    )
    self.lora_proj_b = nnx.data(
      layers.zeros_param((r, d), cfg.param_dtype, (None, "embed")) if proj else None
    )

  def project_qkv(self, x_BxTxD):
    dt, s = self.cfg.dtype, self.lora.scale
    w = jax.lax.stop_gradient(self.c_attn[...])
    has_adapter = self.lora_qkv_a is not None
    if has_adapter and self.lora.fused:
      w = merged_qkv(w, self.lora_qkv_a[...], self.lora_qkv_b[...], s)
    qkv = jnp.einsum("btd,dchk->cbthk", x_BxTxD, w.astype(dt))
    if has_adapter and not self.lora.fused:
      x_BxTxR = x_BxTxD @ self.lora_qkv_a[...].astype(dt)
      qkv = qkv + s * jnp.einsum("btr,rchk->cbthk", x_BxTxR, self.lora_qkv_b[...].astype(dt))
    if self.c_attn_bias is not None:
      qkv = qkv + jax.lax.stop_gradient(self.c_attn_bias[...]).astype(dt)[:, None, None]
    return qkv

  def project_out(self, y_BxTxHxK):
    dt, s = self.cfg.dtype, self.lora.scale
    w = jax.lax.stop_gradient(self.c_proj[...])
    has_adapter = self.lora_proj_a is not None
    if has_adapter and self.lora.fused:
      w = merged_proj(w, self.lora_proj_a[...], self.lora_proj_b[...], s)
    out = jnp.einsum("bthk,hkd->btd", y_BxTxHxK, w.astype(dt))
    if has_adapter and not self.lora.fused:
      y_BxTxR = jnp.einsum("bthk,hkr->btr", y_BxTxHxK, self.lora_proj_a[...].astype(dt))
      out = out + s * (y_BxTxR @ self.lora_proj_b[...].astype(dt))
    if self.c_proj_bias is not None:
      out = out + jax.lax.stop_gradient(self.c_proj_bias[...]).astype(dt)
    return out


class LoraBlock(layers.Block):
  """`layers.Block` whose attention is a `LoraAttention` (LayerNorms and MLP train fully)."""

  def __init__(self, cfg: layers.BlockConfig, lora: LoraConfig, *, rngs: nnx.Rngs):
    super().__init__(cfg, rngs=rngs)
    self.attn = LoraAttention(cfg, lora, rngs=rngs)


def merge_attention(attn: dict, lora: LoraConfig) -> dict:
  """Plain attention parameters {c_attn, c_attn_bias, c_proj, c_proj_bias} from a pure-dict
  `LoraAttention` state (adapters folded in); a plain attention dict is returned as is."""
  out = {k: v for k, v in attn.items() if not k.startswith("lora_")}
  if attn.get("lora_qkv_a") is not None:
    out["c_attn"] = merged_qkv(attn["c_attn"], attn["lora_qkv_a"], attn["lora_qkv_b"], lora.scale)
  if attn.get("lora_proj_a") is not None:
    out["c_proj"] = merged_proj(
      attn["c_proj"], attn["lora_proj_a"], attn["lora_proj_b"], lora.scale
    )
  return out


def frozen_mask(params) -> dict:
  """Tree of bools over pure-dict params: True for base weights that sit next to adapters."""

  def walk(node):
    if not isinstance(node, dict):
      return False
    has_adapter = any(str(k).startswith("lora_") for k in node)
    return {
      k: (has_adapter and not str(k).startswith("lora_") and k in BASE_NAMES)
      if not isinstance(v, dict)
      else walk(v)
      for k, v in node.items()
    }

  return walk(params)
