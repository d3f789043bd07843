"""Book learning's goal during training: the share of the book's tail lines the model
recites (`llmjax.inference.recitation`), checked at every evaluation when the config has a
`recite` section; training stops once `recite.goal` of the prompts are recited.

The text is the training split decoded (a book trained with `data.val_fraction=0` is the
whole book). One `Generator` is compiled once and handed each evaluation's parameters, so
a check costs only the greedy decoding of the prompts.
"""

from __future__ import annotations

import warnings

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from llmjax.inference import generate, recitation
from llmjax.util import errors

# Decoding the training split to find its lines is meant for a book, not a corpus.
MAX_BOOK_TOKENS = 2_000_000


class RecitationCheck:
  """`check(params)` -> {'recited_share', 'recited', 'recite_prompts'} on the book's tail."""

  def __init__(self, recite_cfg: ml_collections.ConfigDict, graphdef, tokenizer, train_tokens):
    if len(train_tokens) > MAX_BOOK_TOKENS:
      raise errors.ConfigError(
        f"recite.goal={recite_cfg.goal} checks a book's lines, but the training split has "
        f"{len(train_tokens):,} tokens (more than {MAX_BOOK_TOKENS:,}); drop the recite "
        "section for a corpus."
      )
    self.cfg, self.graphdef, self.tok = recite_cfg, graphdef, tokenizer
    self.text = tokenizer.decode(np.asarray(train_tokens).tolist())
    self.pairs, self.ambiguous = recitation.split_tail(self.text, recite_cfg.tail)
    self.generator = None

  def usable(self) -> bool:
    """Whether the tail holds a line to recite; when not, the run says so in one line and
    trains on without the goal (patience and train.steps still stop it)."""
    left_out = (
      f"; {len(self.ambiguous)} lines that recur before different lines are left out"
      if self.ambiguous
      else ""
    )
    if not self.pairs:
      logging.warning(
        "recite.tail=%s: the last %.0f%% of the text holds no line followed by another line%s, "
        "so recitation is not checked (raise recite.tail, or drop the recite section).",
        self.cfg.tail,
        100 * self.cfg.tail,
        left_out,
      )
    else:
      logging.info(
        "Recitation goal: %d lines of the last %.0f%% as prompts%s.",
        len(self.pairs),
        100 * self.cfg.tail,
        left_out,
      )
    return bool(self.pairs)

  def _continue(self, prompt: str, max_tokens: int) -> str:
    tokens = self.tok.encode_prompt(prompt)
    with warnings.catch_warnings():  # A line longer than the context is cropped, as asked.
      warnings.simplefilter("ignore", UserWarning)
      out = self.generator.generate(
        [tokens], max_tokens, params=generate.SamplingParams(temperature=0.0)
      )
    return self.tok.decode(out[0])

  def __call__(self, params) -> dict:
    if jax.process_count() > 1:  # Each process decodes the same gathered copy.
      params = multihost_utils.process_allgather(params, tiled=True)
    model = nnx.merge(self.graphdef, params)
    if self.generator is None:
      self.generator = generate.Generator(model, eot_id=self.tok.eot_id)
    else:  # Same structure: the compiled prefill and decode loop are reused.
      self.generator.state = nnx.split(model)[1]
    result = recitation.recite(
      self._continue, lambda s: len(self.tok.encode(s)), self.text, self.cfg.tail
    )
    return {
      "recited_share": result["share"],
      "recited": result["recited"],
      "recite_prompts": result["prompts"],
    }

  def goal_reached(self, result: dict) -> str | None:
    """The stop message once `recite.goal` of the prompts are recited, else None."""
    share = result.get("recited_share")
    if share is None or share < self.cfg.goal:
      return None
    return (
      f"recited {result['recited']} of {result['recite_prompts']} prompts from the last "
      f"{self.cfg.tail:.0%} of the book ({share:.0%} >= recite.goal={self.cfg.goal:.0%})"
    )
