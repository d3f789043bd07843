r"""Tagging throughput of the notes pipeline, in words per second.

Tags one English text with spaCy at n_process=1 and n_process=2 (no cache),
then weaves the tags into a GPT-2 `pre` stream, and prints one JSON object:
words/s of wall time, and words per CPU-second (this process and its spaCy
workers), which is the per-process speed even on a busy machine.

  python -m benchmarks.tagging                      # stdlib docstrings, ~100k words
  python -m benchmarks.tagging --input=book.txt --scheme=tag+morph \
      --n_process=1,2,4

The default text is prose gathered from the docstrings of Python's standard
library (ships with every Python, nothing to download), repeated to --words.
"""

import importlib
import inspect
import json
import os
import platform
import resource
import time

from absl import app, flags

from benchmarks import timing
from llmjax.data import notes

_INPUT = flags.DEFINE_string(
  "input", None, "UTF-8 text file to tag; default the standard library docstrings."
)
_WORDS = flags.DEFINE_integer(
  "words", 100_000, "Approximate words of the default text (whitespace-separated)."
)
_MODEL = flags.DEFINE_string("spacy_model", notes.DEFAULT_MODEL, "Installed spaCy pipeline.")
_SCHEME = flags.DEFINE_enum("scheme", "tag", notes.SCHEMES, "Tagging scheme.")
_N_PROCESS = flags.DEFINE_list("n_process", ["1", "2"], "Worker counts.")
_BATCH_SIZE = flags.DEFINE_integer(
  "batch_size", notes.DEFAULT_BATCH_SIZE, "Pieces per nlp.pipe batch."
)
_MAX_CHARS = flags.DEFINE_integer("max_chars", notes.DEFAULT_MAX_CHARS, "Characters per piece.")
_TOKENIZER = flags.DEFINE_string("tokenizer", "gpt2", "Base tokenizer.")

_MODULES = (
  "argparse",
  "collections",
  "concurrent.futures",
  "contextlib",
  "csv",
  "dataclasses",
  "datetime",
  "decimal",
  "difflib",
  "email",
  "fractions",
  "functools",
  "heapq",
  "http.client",
  "inspect",
  "io",
  "itertools",
  "json",
  "logging",
  "multiprocessing",
  "os",
  "pathlib",
  "pickle",
  "random",
  "re",
  "shutil",
  "socket",
  "sqlite3",
  "statistics",
  "string",
  "subprocess",
  "tarfile",
  "tempfile",
  "textwrap",
  "threading",
  "typing",
  "unittest",
  "urllib.request",
  "uuid",
  "zipfile",
)


def stdlib_prose(words: int) -> str:
  """Prose paragraphs from standard-library docstrings, repeated to `words`."""
  paragraphs = []
  for name in _MODULES:
    module = importlib.import_module(name)
    objs = [module] + [
      o
      for _, o in inspect.getmembers(module)
      if (inspect.isclass(o) or inspect.isfunction(o))
      and getattr(o, "__module__", "") == module.__name__
    ]
    for obj in objs:
      for para in (inspect.getdoc(obj) or "").split("\n\n"):
        lines = para.split("\n")
        if any(l.startswith((" ", ">>>")) or l.lstrip().startswith((":", "-", "*")) for l in lines):
          continue  # Code, lists and tables are not prose.
        para = " ".join(l.strip() for l in lines)
        if len(para.split()) >= 8:
          paragraphs.append(para)
  text = "\n\n".join(paragraphs)
  reps = max(1, -(-words // len(text.split())))
  return "\n\n".join([text] * reps)


def _cpu_seconds() -> float:
  """User + system CPU time of this process and its finished children."""
  total = 0.0
  for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
    usage = resource.getrusage(who)
    total += usage.ru_utime + usage.ru_stime
  return total


def main(argv):
  del argv
  if _INPUT.value:
    with open(_INPUT.value, encoding="utf-8", newline="") as f:
      text = f.read()
    source = _INPUT.value
  else:
    text = stdlib_prose(_WORDS.value)
    source = "python-stdlib-docstrings"
  nlp = notes.load_pipeline(_MODEL.value, _SCHEME.value)  # Load untimed.
  result = {
    "benchmark": "tagging",
    "model": notes.model_id(nlp),
    "scheme": _SCHEME.value,
    "components": nlp.pipe_names,
    "text": source,
    "text_chars": len(text),
    "batch_size": _BATCH_SIZE.value,
    "max_chars": _MAX_CHARS.value,
    "cpu_count": os.cpu_count(),
    "machine": platform.processor() or platform.machine(),
    "load_average_before": os.getloadavg()[0],
    "words_per_s": {},
    "words_per_cpu_s": {},
  }
  tagged = None
  for n in dict.fromkeys(int(v) for v in _N_PROCESS.value):
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    tagged = notes.tag_text(
      text,
      _MODEL.value,
      _SCHEME.value,
      n_process=n,
      batch_size=_BATCH_SIZE.value,
      max_chars=_MAX_CHARS.value,
      use_cache=False,
    )
    dt = time.perf_counter() - t0
    result["words_per_s"][str(n)] = timing.rate(tagged.num_words, dt, 0)
    # Per-process speed, whatever else shares the machine: words per second
    # of CPU time spent by this process and its spaCy workers.
    result["words_per_cpu_s"][str(n)] = timing.rate(tagged.num_words, _cpu_seconds() - cpu0, 0)
  result["load_average_after"] = os.getloadavg()[0]
  result["text_words"] = tagged.num_words
  rates = list(result["words_per_s"].values())
  result["scaling_vs_first"] = [timing.ratio(r, rates[0], 2) for r in rates]

  from llmjax.data import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top

  tok = tokenizer_lib.get_tokenizer(_TOKENIZER.value)
  t0 = time.perf_counter()
  stream = notes.weave(tagged, "pre", tok)
  dt = time.perf_counter() - t0
  result["weave_words_per_s"] = timing.rate(tagged.num_words, dt, 0)
  result["pre_tokens"] = int(stream.ids.shape[0])
  result[timing.TOO_FAST] = sorted(
    [f"words_per_s.{n}" for n, v in result["words_per_s"].items() if v is None]
    + [f"words_per_cpu_s.{n}" for n, v in result["words_per_cpu_s"].items() if v is None]
    + (["weave_words_per_s"] if result["weave_words_per_s"] is None else [])
  )
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
