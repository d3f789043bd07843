"""The tokenizer of a notes model: base tokens plus one token per note string."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence

from llmjax.data.tokenizer import Tokenizer


class NotesTokenizer(Tokenizer):
  """A base tokenizer extended with notes: id base_vocab_size + i is notes[i].

  `decode` writes notes as their strings (`[NN]`), so text sampled from a
  notes model shows its notes; `encode` maps note strings in the text back to
  note ids (so a prompt can carry notes) and encodes the rest with the base.
  """

  def __init__(self, base: Tokenizer, notes: Sequence[str]):
    self.base = base
    self.notes = tuple(notes)
    self.name = f"{base.name}+notes"
    self.vocab_size = base.vocab_size + len(self.notes)
    self.eot_id = base.eot_id
    self.fingerprint = hashlib.sha256(
      json.dumps([base.fingerprint, self.notes]).encode()
    ).hexdigest()
    self._ids = {n: base.vocab_size + i for i, n in enumerate(self.notes)}
    self._pattern = re.compile(
      "|".join(re.escape(n) for n in sorted(self.notes, key=len, reverse=True))
    )

  def encode(self, text: str, *, allow_eot: bool = False) -> list[int]:
    if not self.notes:
      return self.base.encode(text, allow_eot=allow_eot)
    ids, pos = [], 0
    for m in self._pattern.finditer(text):
      if m.start() > pos:
        ids += self.base.encode(text[pos : m.start()], allow_eot=allow_eot)
      ids.append(self._ids[m.group()])
      pos = m.end()
    if pos < len(text):
      ids += self.base.encode(text[pos:], allow_eot=allow_eot)
    return ids

  def decode(self, ids: Iterable[int]) -> str:
    base = self.base.vocab_size
    out, run = [], []
    for i in ids:
      i = int(i)
      if i < base:
        run.append(i)
        continue
      if run:
        out.append(self.base.decode(run))
        run = []
      out.append(self.notes[i - base] if i - base < len(self.notes) else f"[?{i}]")
    if run:
      out.append(self.base.decode(run))
    return "".join(out)
