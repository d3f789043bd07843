"""A generated Czech text for offline demonstrations with a morphology-rich pipeline.

Sentences are drawn (seeded) from small hand-written lists whose forms agree in
gender, case and number, so `cs_core_news_sm` finds real morphology (past-tense
verbs inflected for gender, nouns in six cases) in every sentence. Written for
llmjax; public domain.
"""

from __future__ import annotations

import numpy as np

from llmjax.util import errors

# (subject, gender): gender picks the past-tense ending below.
_SUBJECTS = (
  ("Malý pes", "m"),
  ("Můj starší bratr", "m"),
  ("Starý rybář", "m"),
  ("Náš soused", "m"),
  ("Mladý student", "m"),
  ("Ten voják", "m"),
  ("Stará žena", "f"),
  ("Naše učitelka", "f"),
  ("Moje babička", "f"),
  ("Malá holčička", "f"),
  ("Sousedova kočka", "f"),
  ("Jedna lékařka", "f"),
  ("Malé dítě", "n"),
  ("To kotě", "n"),
  ("Hnědé hříbě", "n"),
)
_ENDING = {"m": "", "f": "a", "n": "o"}
# (past-tense stem, completions in the case the verb or preposition governs).
_PREDICATES = (
  (
    "běžel",
    (
      "přes zelenou louku",
      "do hlubokého lesa",
      "k široké řece",
      "po staré cestě",
      "kolem našeho domu",
    ),
  ),
  ("viděl", ("velký dům", "starého psa", "červené jablko", "vysokou věž", "tiché jezero")),
  ("hledal", ("svou knihu", "ztracené klíče", "cestu domů", "malého kocoura", "čistou vodu")),
  (
    "spal",
    ("na zahradě", "v teplé posteli", "pod vysokým stromem", "u otevřeného okna", "ve stodole"),
  ),
  ("čekal", ("na ranní vlak", "před školou", "u starého mostu", "na svého přítele", "celý den")),
  (
    "psal",
    ("dlouhý dopis", "krátkou básničku", "úkol do školy", "příběh o drakovi", "seznam věcí"),
  ),
  ("zpíval", ("veselou píseň", "starou ukolébavku", "v kostele", "s ostatními dětmi", "potichu")),
)
_WHEN = ("Včera", "Dnes ráno", "Večer", "V neděli", "Na podzim", "Potom", "Minulý týden", "Jednou")
_REASONS = (
  "protože pršelo",
  "protože bylo teplo",
  "když zapadalo slunce",
  "než přišla zima",
  "protože byl volný den",
  "a potom bylo ticho",
  "ale nikdo to neviděl",
  "a všichni se smáli",
)


def sentence(rng: np.random.Generator) -> str:
  subject, gender = _SUBJECTS[rng.integers(len(_SUBJECTS))]
  stem, completions = _PREDICATES[rng.integers(len(_PREDICATES))]
  verb = stem + _ENDING[gender]
  rest = completions[rng.integers(len(completions))]
  form = rng.integers(3)
  if form == 0:
    text = f"{subject} {verb} {rest}"
  elif form == 1:
    when = _WHEN[rng.integers(len(_WHEN))]
    text = f"{when} {subject[0].lower() + subject[1:]} {verb} {rest}"
  else:
    text = f"{subject} {verb} {rest}, {_REASONS[rng.integers(len(_REASONS))]}"
  return text + "."


def czech_text(n_sentences: int, seed: int = 0, sentences_per_paragraph: int = 6) -> str:
  """`n_sentences` generated sentences, in paragraphs separated by blank lines."""
  if n_sentences < 1:
    raise errors.ConfigError(f"n_sentences={n_sentences} must be >= 1.")
  rng = np.random.default_rng(seed)
  sentences = [sentence(rng) for _ in range(n_sentences)]
  paragraphs = [
    " ".join(sentences[i : i + sentences_per_paragraph])
    for i in range(0, n_sentences, sentences_per_paragraph)
  ]
  return "\n\n".join(paragraphs) + "\n"
