"""Row 20: mistakes in what a run is given or left with are one line naming the value and
the fix, never a traceback: a prompt file or a book that is not UTF-8, a `recite --out` into
a missing directory, a damaged or mismatched config.json, a model vocabulary larger than the
tokenizer's, a damaged spaCy tag cache. `llmjax.recite` prints no library INFO logs."""

import json
import logging
import re
import shutil
import types

import numpy as np
import pytest
import reliability_harness as h

from llmjax import api
from llmjax.config import load as config_load
from llmjax.runs import workdir as workdir_lib
from llmjax.train import lm
from llmjax.util import errors

RUNS = (
  "file_prompt",
  "recite_bytes",
  "recite_out",
  "sample_truncated",
  "sample_mismatch",
  "vocab",
  "resume_truncated",
)


def tiny_config(corpus, **overrides):
  """The tiny run's config in this process (8 devices: batch 8)."""
  config = config_load.load_config("configs/shakespeare.py:smoke")
  config.unlock()
  config_load.apply_overrides(
    config, {**h.TINY, "data.path": str(corpus), "train.batch_size": 8, **overrides}
  )
  return config


def non_utf8_copy(corpus, path):
  """The corpus with one byte that is not UTF-8 in its first line."""
  raw = corpus.read_bytes()
  path.write_bytes(raw[:5] + b"\xff" + raw[5:])
  return path


@pytest.fixture(scope="module")
def runs(base, corpus, reference, tmp_path_factory):
  root = tmp_path_factory.mktemp("one-line")
  work = {name: root / name for name in ("sample_truncated", "sample_mismatch", "resume_truncated")}
  for workdir in work.values():
    shutil.copytree(reference, workdir)
  for name in ("sample_truncated", "resume_truncated"):
    text = (work[name] / "config.json").read_text()
    (work[name] / "config.json").write_text(text[: len(text) // 2])  # A torn write.
  config = json.loads((reference / "config.json").read_text())
  config["model"]["n_embd"] = 32  # No longer the checkpoint's model.
  (work["sample_mismatch"] / "config.json").write_text(json.dumps(config))
  work["vocab"] = root / "vocab"
  prompt = root / "prompt.txt"
  prompt.write_bytes(b"the king \xff\n")
  book = non_utf8_copy(corpus, root / "book.txt")
  sample = ["--max_new_tokens=2", "--temperature=0"]
  jobs = {
    "file_prompt": [f"--workdir={reference}", f"--prompt=FILE:{prompt}", *sample],
    # A missing run as well: --out must be refused before the run is even looked at.
    "recite_out": [
      f"--workdir={root / 'no-run'}",
      f"--text={corpus}",
      f"--out={root / 'missing' / 'recite.json'}",
    ],
    "recite_bytes": [f"--workdir={reference}", f"--text={book}", "--tail=0.1"],
    "sample_truncated": [f"--workdir={work['sample_truncated']}", *sample],
    "sample_mismatch": [f"--workdir={work['sample_mismatch']}", *sample],
    "vocab": h.train_argv(corpus, work["vocab"], model__vocab_size=50257),
    "resume_truncated": h.train_argv(corpus, work["resume_truncated"]),
  }
  modules = {"recite_out": "llmjax.recite", "recite_bytes": "llmjax.recite"}
  modules.update({k: "llmjax.sample" for k in jobs if k.startswith(("file", "sample"))})
  results = h.run_many(
    base,
    [{"argv": jobs[name], "module": modules.get(name, "llmjax.main")} for name in RUNS],
  )
  return {**work, "prompt": prompt, "book": book, "root": root}, dict(zip(RUNS, results))


def test_file_prompt_that_is_not_utf8_is_one_line(runs, reference):
  paths, results = runs
  prompt = paths["prompt"]
  message = (
    f"prompt='FILE:{prompt}': {prompt} is not UTF-8 text (byte 0xff at offset 9); save the "
    "prompt file as UTF-8."
  )
  assert h.error_line(results["file_prompt"]) == f"Error: {message}"
  with pytest.raises(errors.SamplingError) as e:
    api.Sampler(reference).generate_text(f"FILE:{prompt}", 2)
  assert str(e.value) == message


def test_recite_reads_a_book_that_is_not_utf8_as_training_did_and_prints_no_info_logs(runs):
  paths, results = runs
  result = results["recite_bytes"]
  assert result.returncode == 0, result.describe()
  assert "Traceback" not in result.stderr
  assert (
    f"--text={paths['book']}: 1 byte(s) are not valid UTF-8 (first at byte offset 5) and "
    "were replaced by U+FFFD; re-encode the file as UTF-8 to keep them"
  ) in result.stderr
  # Quiet like llmjax.sample: no absl/Orbax INFO lines, only warnings.
  assert not [line for line in result.stderr.splitlines() if re.match(r"I\d{4} ", line)]
  assert "INFO" not in result.stderr, result.describe()
  assert re.search(
    r"\n\d+ of \d+ prompts \(\d+ lines of the last 10%, given as line and line\+newline\) "
    r"continued exactly\.\n$",
    result.stdout,
  )


def test_recite_out_into_a_missing_directory_is_refused_before_the_work(runs):
  paths, results = runs
  out = paths["root"] / "missing" / "recite.json"
  assert h.error_line(results["recite_out"]) == (
    f"Error: --out={out}: directory {out.parent} does not exist; create it "
    f"(mkdir -p {out.parent}) or pick another path."
  )


def test_sampling_with_a_truncated_config_json_is_one_line(runs):
  paths, results = runs
  path = paths["sample_truncated"] / "config.json"
  line = h.error_line(results["sample_truncated"])
  assert line.startswith(f"Error: {path} is damaged (JSONDecodeError: "), line
  assert line.endswith(
    f"Re-run the training command with --workdir={paths['sample_truncated']} (it resumes and "
    "writes config.json again), or restore the file from a copy."
  )


def test_resume_with_a_truncated_config_json_writes_it_again(runs, reference):
  # identity.json is what a resume is checked against; config.json is written after it.
  paths, results = runs
  result = results["resume_truncated"]
  assert result.returncode == 0, result.describe()
  assert f"resuming from step {h.STEPS}" in result.stdout
  config = paths["resume_truncated"] / "config.json"
  assert config.read_bytes() == (reference / "config.json").read_bytes()


def test_sampling_with_a_config_json_that_no_longer_matches_the_checkpoint_is_one_line(runs):
  paths, results = runs
  workdir = paths["sample_mismatch"]
  assert h.error_line(results["sample_mismatch"]) == (
    f"Error: Checkpoint {workdir}/checkpoints/{h.STEPS} has ['params']['h'][0]['attn']"
    "['c_attn'] of shape (16, 3, 2, 8) but the model expects shape (32, 3, 2, 16): the model "
    f"changed since it was written. {workdir}/config.json no longer describes the model of "
    "that checkpoint: re-run the run's training command to write it again, or restore it."
  )


def test_model_vocabulary_larger_than_the_tokenizer_is_one_line_before_training(runs):
  paths, results = runs
  assert h.error_line(results["vocab"]) == (
    "Error: model.vocab_size=50257 is larger than the vocabulary of data.tokenizer='char' "
    "(257): the model would sample ids the tokenizer cannot decode; set "
    "--config.model.vocab_size=257."
  )
  assert h.steps_on_disk(paths["vocab"]) == []
  assert not (paths["vocab"] / "summary.json").exists()


def test_a_failure_after_training_marks_summary_json_failed(base, corpus, tmp_path, monkeypatch):
  monkeypatch.setenv("LLMJAX_CACHE", str(base / "llmjax-cache"))

  def finish(self, *args):
    raise errors.SamplingError("the final sample failed")

  monkeypatch.setattr(lm.LMTask, "finish", finish)
  with pytest.raises(errors.SamplingError):
    lm.train(tiny_config(corpus, **{"train.steps": 2}), tmp_path)
  assert json.loads((tmp_path / "summary.json").read_text())["status"] == "failed"


def test_damaged_tag_cache_is_tagged_again(tmp_path, monkeypatch, caplog):
  notes = pytest.importorskip("llmjax.data.notes")
  pytest.importorskip(notes.DEFAULT_MODEL)
  monkeypatch.setenv("LLMJAX_CACHE", str(tmp_path / "cache"))
  text = "The old dog sleeps by the door.\n"
  first = notes.tag_text(text)
  (entry,) = (tmp_path / "cache" / "notes").glob("*.npz")
  entry.write_bytes(entry.read_bytes()[:100])  # Truncated: not a zip archive any more.
  with caplog.at_level(logging.WARNING):
    again = notes.tag_text(text)
  assert f"The tag cache entry {entry} is damaged; tagging the text again." in caplog.text
  np.testing.assert_array_equal(again.starts, first.starts)
  np.testing.assert_array_equal(again.label_ids, first.label_ids)
  with np.load(entry) as f:  # Written again, whole.
    np.testing.assert_array_equal(f["starts"], first.starts)


def test_resume_check_of_an_older_workdir_skips_a_truncated_config_json(tmp_path, corpus, caplog):
  # Without identity.json the resume is checked against config.json; a torn one is skipped
  # with a warning (the checkpoint's shapes are still checked) and written again later.
  config = tiny_config(corpus)
  (tmp_path / "config.json").write_text('{"model": {"n_em')
  task = types.SimpleNamespace(config=config, run_config=lambda: config)
  with caplog.at_level(logging.WARNING):
    workdir_lib.check_resume(tmp_path, task)
  assert f"{tmp_path / 'config.json'} is unreadable (JSONDecodeError: " in caplog.text
