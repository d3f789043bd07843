"""Generated math exercises with worked solutions: math text that needs no network.

`documents(seed)` yields an endless, reproducible stream of short documents, each an
exercise and its step-by-step solution: arithmetic, linear equations, derivatives of
polynomials, greatest common divisors (Euclid's algorithm), fraction sums and sums of
arithmetic series. Every stated result is computed, so the text is correct and its
regularities are learnable. `data.source='math'` with `data.path='generated'` reads it
(see `llmjax.data.math_text`); the small variants of the math configs use it offline.
"""

from __future__ import annotations

import fractions
import math
import random
from collections.abc import Callable, Iterator

NAME = "generated"  # The data.path entry that selects this generator.


def _arithmetic(rng: random.Random) -> str:
  a, b = rng.randint(10, 9999), rng.randint(10, 9999)
  op = rng.choice("+-*")
  if op == "*":
    a, b = rng.randint(2, 99), rng.randint(2, 999)
    tens, ones = divmod(a, 10)
    steps = (
      f"{a} * {b} = {tens * 10} * {b} + {ones} * {b} = {tens * 10 * b} + {ones * b} = {a * b}."
    )
    return f"Compute {a} * {b}.\n\nSolution. {steps}"
  result = a + b if op == "+" else a - b
  return f"Compute {a} {op} {b}.\n\nSolution. {a} {op} {b} = {result}."


def _linear_equation(rng: random.Random) -> str:
  a, x, b = rng.randint(2, 12), rng.randint(-20, 20), rng.randint(1, 60)
  c = a * x + b
  return (
    f"Solve {a}x + {b} = {c} for x.\n\nSolution. Subtract {b} from both sides: "
    f"{a}x = {c - b}. Divide both sides by {a}: x = {x}. Check: {a} * ({x}) + {b} = "
    f"{c}."
  )


def _term(coef: int, power: int, first: bool) -> str:
  sign = "-" if coef < 0 else ("" if first else "+")
  size = abs(coef)
  body = ("" if size == 1 and power else str(size)) + (
    "x" if power == 1 else f"x^{power}" if power else ""
  )
  return f"{sign}{body}" if first else f" {sign} {body}"


def _polynomial(terms: list[tuple[int, int]]) -> str:
  return "".join(_term(c, p, i == 0) for i, (c, p) in enumerate(terms)) or "0"


def _derivative(rng: random.Random) -> str:
  powers = sorted(rng.sample(range(0, 7), rng.randint(2, 4)), reverse=True)
  terms = [(rng.choice([-1, 1]) * rng.randint(1, 9), p) for p in powers]
  deriv = [(c * p, p - 1) for c, p in terms if p]
  rules = "; ".join(
    f"d/dx {_polynomial([(c, p)])} = {_polynomial([(c * p, p - 1)])}" for c, p in terms if p
  )
  return (
    f"Differentiate f(x) = {_polynomial(terms)}.\n\nSolution. By the power rule, "
    f"{rules}. So f'(x) = {_polynomial(deriv)}."
  )


def _gcd(rng: random.Random) -> str:
  g = rng.randint(2, 30)
  a, b = g * rng.randint(2, 60), g * rng.randint(2, 60)
  a, b = max(a, b), min(a, b)
  lines, x, y = [], a, b
  while y:
    lines.append(f"{x} = {x // y} * {y} + {x % y}")
    x, y = y, x % y
  return (
    f"Find the greatest common divisor of {a} and {b}.\n\nSolution. By Euclid's "
    f"algorithm: {'; '.join(lines)}. The last nonzero remainder is {x}, so "
    f"gcd({a}, {b}) = {x}."
  )


def _fractions(rng: random.Random) -> str:
  p = fractions.Fraction(rng.randint(1, 9), rng.randint(2, 12))
  q = fractions.Fraction(rng.randint(1, 9), rng.randint(2, 12))
  den = math.lcm(p.denominator, q.denominator)
  a, b = p.numerator * den // p.denominator, q.numerator * den // q.denominator
  total = f"{a + b}/{den}"
  if str(p + q) != total:
    total += f" = {p + q}"
  return (
    f"Add {p} and {q}.\n\nSolution. The common denominator is {den}: {p} = "
    f"{a}/{den} and {q} = {b}/{den}. So {p} + {q} = {total}."
  )


def _series(rng: random.Random) -> str:
  first, step, n = rng.randint(1, 20), rng.randint(1, 9), rng.randint(5, 40)
  last = first + (n - 1) * step
  return (
    f"Find the sum of the arithmetic series {first} + {first + step} + ... + "
    f"{last}.\n\nSolution. It has n = {n} terms, from {first} to {last}. The sum "
    f"is n * (first + last) / 2 = {n} * {first + last} / 2 = "
    f"{n * (first + last) // 2}."
  )


_KINDS: tuple[Callable[[random.Random], str], ...] = (
  _arithmetic,
  _linear_equation,
  _derivative,
  _gcd,
  _fractions,
  _series,
)


def documents(seed: int = 0) -> Iterator[str]:
  """An endless stream of exercises with solutions, the same for the same seed."""
  rng = random.Random(seed)
  number = 0
  while True:
    number += 1
    yield f"Exercise {number}. " + rng.choice(_KINDS)(rng)
