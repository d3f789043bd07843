r"""Notes corpora from the command line.

Show the pieces of a text:

  python -m llmjax.notes --variant=pre --text="Brightly jumping jellybeans became jubilant."

Write a corpus (train.bin, val.bin: flat uint32 ids; manifest.json; see
llmjax.data.notes.write_corpus):

  python -m llmjax.notes --variant=post --input=book.txt --output=corpora/post

Entropy of each tagging scheme's notes, in bits per word:

  python -m llmjax.notes --entropy --input=book.txt
"""

import json
import sys

import tqdm
from absl import app, flags

from llmjax.data import notes
from llmjax.data import tokenizer as tokenizer_lib

_VARIANT = flags.DEFINE_enum(
  "variant",
  "pre",
  notes.VARIANTS,
  "Where notes go: before each word, after it, a blank note after it, or no notes.",
)
_SCHEME = flags.DEFINE_enum("scheme", "tag", notes.SCHEMES, "What a note says (pre/post variants).")
_TEXT = flags.DEFINE_string("text", None, "Text to show as pieces.")
_INPUT = flags.DEFINE_string("input", None, "UTF-8 text file to turn into a corpus.")
_OUTPUT = flags.DEFINE_string("output", None, "Directory for the corpus.")
_ENTROPY = flags.DEFINE_bool(
  "entropy", False, "Print the notes entropy of every scheme (bits per word) as JSON."
)
_MODEL = flags.DEFINE_string(
  "spacy_model", notes.DEFAULT_MODEL, "Installed spaCy pipeline (e.g. cs_core_news_sm)."
)
_TOKENIZER = flags.DEFINE_string("tokenizer", "gpt2", "Base tokenizer.")
_N_PROCESS = flags.DEFINE_integer("n_process", 1, "spaCy worker processes.")
_BATCH_SIZE = flags.DEFINE_integer(
  "batch_size", notes.DEFAULT_BATCH_SIZE, "Text pieces per nlp.pipe batch."
)
_MAX_CHARS = flags.DEFINE_integer(
  "max_chars", notes.DEFAULT_MAX_CHARS, "Characters per text piece given to spaCy."
)
_VAL_FRACTION = flags.DEFINE_float(
  "val_fraction", 0.1, "Last fraction of the words held out as the val split."
)
_CACHE = flags.DEFINE_bool("cache", True, "Reuse and store tags in $LLMJAX_CACHE/notes.")


def _read(path: str) -> str:
  try:
    with open(path, encoding="utf-8", newline="") as f:
      text = f.read()
  except FileNotFoundError:
    raise app.UsageError(f"--input file {path!r} does not exist.") from None
  except UnicodeDecodeError as e:
    raise app.UsageError(f"--input file {path!r} is not UTF-8 text ({e}).") from None
  if not text.strip():
    raise app.UsageError(
      f"--input file {path!r} has no words (it is empty or only whitespace); nothing to tag."
    )
  return text


def _tokenizer():
  return tokenizer_lib.get_tokenizer(_TOKENIZER.value)


def main(argv):
  try:
    _main(argv)
  except notes.SpacyModelMissingError as e:
    sys.exit(f"error: {e}")


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if (_TEXT.value is None) == (_INPUT.value is None):
    raise app.UsageError('Give exactly one of --text="..." or --input=FILE.')
  tag_kwargs = dict(
    n_process=_N_PROCESS.value,
    batch_size=_BATCH_SIZE.value,
    max_chars=_MAX_CHARS.value,
    use_cache=_CACHE.value,
  )
  if _ENTROPY.value:
    text = _TEXT.value if _TEXT.value is not None else _read(_INPUT.value)
    print(json.dumps(notes.scheme_entropies(text, _MODEL.value, **tag_kwargs)))
    return
  if _TEXT.value is not None:
    tok = _tokenizer()
    _, stream = notes.build(
      _TEXT.value, _VARIANT.value, tok, _MODEL.value, _SCHEME.value, **tag_kwargs
    )
    print(notes.pieces(stream.ids, tok, stream.notes))
    return
  if not _OUTPUT.value:
    raise app.UsageError("--input needs --output=DIR for the corpus.")
  text = _read(_INPUT.value)
  tok = _tokenizer()
  notes.load_pipeline(
    _MODEL.value,  # Loaded before the clock starts.
    notes.tagging_scheme(_VARIANT.value, _SCHEME.value),
  )
  with tqdm.tqdm(
    total=len(text), unit="char", unit_scale=True, desc=f"tagging {_INPUT.value}", file=sys.stderr
  ) as bar:
    rate = notes.WordRate(bar)
    tagged, stream = notes.build(
      text, _VARIANT.value, tok, _MODEL.value, _SCHEME.value, progress=rate, **tag_kwargs
    )
  manifest = notes.write_corpus(
    _OUTPUT.value, tagged, stream, tok, val_fraction=_VAL_FRACTION.value
  )
  print(
    json.dumps(
      {
        "output": _OUTPUT.value,
        "variant": _VARIANT.value,
        "scheme": manifest["notes"]["scheme"],
        "words_per_s": round(rate.rate),
        **manifest["notes"]["counts"],
        **{f"n_{k}": v["n_tokens"] for k, v in manifest["splits"].items()},
      }
    )
  )


def run():
  """Runs the program with the process's command line."""
  app.run(main)


if __name__ == "__main__":
  run()
