"""Rates and ratios of measured times, without dividing by a time that was too short to measure.

A timer can return the same reading twice (a metrics stamp rounded to the millisecond, a
coarse clock, a tiny smoke-test shape), and a per-token time taken as a difference of two
timings can come out zero or negative. Such a time measured nothing, so a rate over it is
not a number: these helpers return None for it, and `flag` names the fields that are None
for that reason under "too_fast_to_time", so a missing figure is never a silent gap.
"""

from __future__ import annotations

import math

TOO_FAST = "too_fast_to_time"


def timed(seconds: float | None) -> bool:
  """Whether `seconds` is a usable measured time: finite and above zero."""
  return seconds is not None and math.isfinite(seconds) and seconds > 0


def rate(amount: float, seconds: float | None, digits: int | None = None) -> float | None:
  """`amount / seconds` (rounded to `digits` if given), or None when `seconds` is not timed."""
  if not timed(seconds):
    return None
  value = amount / seconds
  return value if digits is None else round(value, digits)


def ratio(num: float | None, den: float | None, digits: int | None = None) -> float | None:
  """`num / den` of two measured times (None when either is not timed)."""
  if not timed(num):
    return None
  return rate(num, den, digits)


def ratios(nums, dens) -> list[float]:
  """Pairwise `num / den` of measured times, leaving out pairs where either is not timed."""
  return [n / d for n, d in zip(nums, dens) if timed(n) and timed(d)]


def flag(record: dict, *keys: str) -> dict:
  """Sets `record["too_fast_to_time"]` to the sorted `keys` whose value is None; returns it."""
  record[TOO_FAST] = sorted(k for k in keys if record.get(k) is None)
  return record


def median_ratio(nums, dens, digits: int | None = None) -> float | None:
  """The median of the pairwise `num / den` over the timed pairs (None when there is none)."""
  values = sorted(ratios(nums, dens))
  if not values:
    return None
  mid = len(values) // 2
  value = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
  return value if digits is None else round(value, digits)
