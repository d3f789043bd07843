"""Markdown tables: the one writer behind every report table llmjax prints."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def table(
  header: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool] | None = None
) -> str:
  """A markdown table with `header` and the already-formatted cells of `rows`.

  Args:
    header: column titles.
    rows: one sequence of cell strings per row, as long as `header`.
    right: per column, whether to right-align it (numbers); default all left.
  """
  right = list(right) if right is not None else [False] * len(header)
  if len(right) != len(header):
    raise ValueError(f"{len(right)} alignments for {len(header)} columns")
  lines = [
    "| " + " | ".join(header) + " |",
    "|" + "|".join("---:" if r else "---" for r in right) + "|",
  ]
  for cells in rows:
    cells = list(cells)
    if len(cells) != len(header):
      raise ValueError(f"a row has {len(cells)} cells for {len(header)} columns: {cells}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)
