"""Shared runs of the reliability tests: one corpus, caches, and the uninterrupted reference."""

import pathlib

import pytest
import reliability_harness as h


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> pathlib.Path:
  """A directory for the session's corpus, caches (token shards, compiled steps) and runs."""
  return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="session")
def corpus(base) -> pathlib.Path:
  return h.write_corpus(base / "corpus.txt")


@pytest.fixture(scope="session")
def reference(base, corpus) -> pathlib.Path:
  """The workdir of a tiny run that was never interrupted (20 steps, checkpoints every 4)."""
  workdir = base / "reference"
  result = h.run(base, h.train_argv(corpus, workdir))
  assert result.returncode == 0, result.describe()
  return workdir
