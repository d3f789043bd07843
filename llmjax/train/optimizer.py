"""AdamW with warmup + cosine decay, global-norm clipping, a weight-decay mask, and an
optional trainable mask (frozen parameters get no update and no optimizer state)."""

from __future__ import annotations

import jax
import optax

NO_DECAY_NAMES = ("bias", "scale", "wte", "wpe", "embedding", "embed")


def learning_rate_schedule(optim_cfg, total_steps: int) -> optax.Schedule:
  """Linear warmup to the peak, cosine decay to `min_lr_ratio * peak` at `total_steps`."""
  peak = optim_cfg.learning_rate
  warmup = min(optim_cfg.warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
    init_value=0.0 if warmup else peak,
    peak_value=peak,
    warmup_steps=warmup,
    decay_steps=max(total_steps, warmup + 1),
    end_value=peak * optim_cfg.min_lr_ratio,
  )


def decays(path) -> bool:
  """Weight decay applies to matrices only: not to biases, norms or embeddings."""
  name = str(getattr(path[-1], "key", path[-1]))
  return not any(name == n or name.endswith("_" + n) for n in NO_DECAY_NAMES)


def decay_mask(params):
  return jax.tree_util.tree_map_with_path(lambda path, _: decays(path), params)


def make_optimizer(optim_cfg, total_steps: int, trainable=None) -> optax.GradientTransformation:
  """AdamW for `optim_cfg`; `trainable` (a tree of bools like the params, or a function of
  the params giving one) confines it, clipping included, to the True leaves: the others
  get zero updates and carry no moments."""
  if trainable is not None:
    labels = lambda params: jax.tree.map(
      lambda t: "train" if t else "frozen", trainable(params) if callable(trainable) else trainable
    )
    return optax.multi_transform(
      {"train": make_optimizer(optim_cfg, total_steps), "frozen": optax.set_to_zero()}, labels
    )
  schedule = learning_rate_schedule(optim_cfg, total_steps)
  parts = []
  if optim_cfg.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(optim_cfg.grad_clip))
  parts.append(
    optax.adamw(
      schedule,
      b1=optim_cfg.beta1,
      b2=optim_cfg.beta2,
      eps=optim_cfg.eps,
      weight_decay=optim_cfg.weight_decay,
      mask=decay_mask,
    )
  )
  return optax.chain(*parts)
