"""Row 19: a run's identity (its token stream, batch size, seed and model shape) is kept in
DIR/identity.json; a resume that changes any of it is refused naming the key, before anything
is written, and config.json is written only after a successful restore or init."""

import hashlib
import json
import pathlib
import shutil

import pytest
import reliability_harness as h

from llmjax.data import shards
from llmjax.data import tokenizer as tokenizer_lib


def files(workdir: pathlib.Path) -> dict[str, bytes]:
  """Every file of a workdir and its bytes."""
  return {
    str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*")) if p.is_file()
  }


CHANGES = {
  "tokenizer": {"data__tokenizer": "gpt2"},
  "corpus": {},  # data.path: the same file name with another text, set below.
  "batch_size": {"train__batch_size": 8},
  "seed": {"train__seed": 1},
  "val_fraction": {"data__val_fraction": 0.2},
  "missing_path": {},  # data.path: a file that does not exist.
}


@pytest.fixture(scope="module")
def resumed(base, corpus, reference, tmp_path_factory):
  """The reference run resumed with each change of CHANGES (refused), and a copy without
  identity.json (an older workdir) resumed unchanged."""
  root = tmp_path_factory.mktemp("identity")
  (root / "other").mkdir()
  other = h.write_corpus(root / "other" / corpus.name, seed=1)
  paths = {"corpus": other, "missing_path": root / "missing.txt"}
  work, jobs = {}, []
  for name, overrides in {**CHANGES, "legacy": {}}.items():
    work[name] = root / name
    shutil.copytree(reference, work[name])
    jobs.append({"argv": h.train_argv(paths.get(name, corpus), work[name], **overrides)})
  (work["legacy"] / "identity.json").unlink()
  before = {name: files(workdir) for name, workdir in work.items()}
  results = dict(zip(work, h.run_many(base, jobs)))
  return work, results, before, other


def test_identity_json_records_the_token_stream_batch_seed_and_model(reference, corpus):
  tok = tokenizer_lib.get_tokenizer("char")
  source = hashlib.sha256(corpus.read_bytes()).hexdigest()
  assert json.loads((reference / "identity.json").read_text()) == {
    "data.tokenizer": "char",
    "data.val_fraction": 0.1,
    "train.batch_size": 4,
    "train.seed": 0,
    "model.arch": "gpt",
    "model.n_layer": 1,
    "model.n_head": 2,
    "model.n_embd": 16,
    "model.block_size": 16,
    "model.vocab_size": 257,
    "model.bias": True,
    "model.scan_layers": False,
    "model.mlp_hidden": 0,
    "data.source_fingerprint": source,
    "data.tokenizer_fingerprint": tok.fingerprint,
    "data.token_cache_key": shards.token_cache_key(source, tok, 0.1),
  }


@pytest.mark.parametrize(
  "name, key, old, new",
  [
    ("tokenizer", "data.tokenizer", "char", "gpt2"),
    ("batch_size", "train.batch_size", 4, 8),
    ("seed", "train.seed", 0, 1),
    ("val_fraction", "data.val_fraction", 0.1, 0.2),
  ],
)
def test_resume_with_another_tokenizer_batch_seed_or_split_is_refused_writing_nothing(
  resumed, name, key, old, new
):
  work, results, before, _ = resumed
  assert h.error_line(results[name]) == (
    f"Error: The workdir holds a run with {key}={old!r} but the config now says {new!r}. "
    f"Use a new --workdir, or set {key}={old!r} to resume."
  )
  assert files(work[name]) == before[name]


def test_resume_with_another_text_is_refused_naming_the_fingerprints(resumed, corpus):
  work, results, before, other = resumed
  old = hashlib.sha256(corpus.read_bytes()).hexdigest()
  new = hashlib.sha256(other.read_bytes()).hexdigest()
  assert h.error_line(results["corpus"]) == (
    f"Error: The workdir holds a run with data.source_fingerprint={old!r} but the data now "
    f"gives {new!r}: the text (data.path, data.source) or the tokenizer changed since that "
    "run. Use a new --workdir, or give it the data of that run to resume."
  )
  assert files(work["corpus"]) == before["corpus"]


def test_failed_resume_leaves_config_json_as_it_was(resumed):
  # The data cannot be read: config.json must still name the run's own corpus.
  work, results, before, _ = resumed
  assert "missing.txt" in h.error_line(results["missing_path"])
  assert files(work["missing_path"]) == before["missing_path"]


def test_workdir_without_identity_json_resumes_and_records_it(resumed, reference):
  work, results, _, _ = resumed
  result = results["legacy"]
  assert result.returncode == 0, result.describe()
  assert f"resuming from step {h.STEPS}" in result.stdout
  identity = work["legacy"] / "identity.json"
  assert identity.read_bytes() == (reference / "identity.json").read_bytes()
