"""Row 13: sampling edge cases are well defined, through `llmjax.api.Sampler` and the
`python -m llmjax.sample` command line, on the reference run (context 16, char tokens)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reliability_harness as h
from flax import nnx

from llmjax import api
from llmjax.inference import generate
from llmjax.util import errors

LONG_PROMPT = "the king shall speak of love and war"  # 36 tokens > context 16.


@pytest.fixture(scope="module")
def sampler(reference):
  return api.Sampler(reference)


def greedy_by_recomputation(model, prompt, n, block_size=16):
  """Greedy decoding that re-runs the whole (right-padded, causal) window every token."""
  forward = jax.jit(lambda tokens: model(tokens))
  seq = list(prompt)
  for _ in range(n):
    window = seq[-block_size:]
    padded = np.zeros((1, block_size), np.int32)
    padded[0, : len(window)] = window
    seq.append(int(jnp.argmax(forward(jnp.asarray(padded))[0, len(window) - 1])))
  return seq[len(prompt) :]


def test_temperature_zero_is_greedy_and_ignores_the_seed(sampler):
  prompt = sampler.tokenizer.encode("the king ")
  outs = [sampler.generate_tokens(prompt, 6, temperature=0.0, seed=s)[0] for s in (0, 1, 2)]
  assert outs[0] == outs[1] == outs[2] == greedy_by_recomputation(sampler.model, prompt, 6)


def test_prompt_longer_than_the_context_keeps_its_end_with_a_warning(sampler):
  prompt = sampler.tokenizer.encode(LONG_PROMPT)
  assert len(prompt) == 36
  with pytest.warns(
    UserWarning,
    match=r"Prompt of 36 tokens is longer than the context \(16\); generating from its last "
    r"12 tokens\.",
  ):
    out = sampler.generate_tokens(prompt, 4, temperature=0.0)[0]
  assert out == sampler.generate_tokens(prompt[-12:], 4, temperature=0.0)[0]
  assert out == greedy_by_recomputation(sampler.model, prompt[-12:], 4)


def test_empty_prompt_starts_from_end_of_text(sampler):
  eot = sampler.tokenizer.eot_id
  assert sampler.generate_tokens([], 5, temperature=0.0)[0] == greedy_by_recomputation(
    sampler.model, [eot], 5
  )
  assert len(sampler.generate_text("", 5, temperature=1.0).encode()) >= 1


def test_zero_new_tokens_gives_nothing(sampler):
  assert sampler.generate_text("the king", 0) == "the king"  # The prompt, then nothing.
  assert sampler.generate_text("the king", 0, include_prompt=False) == ""
  assert sampler.generate_text(LONG_PROMPT, 0, num_samples=2, include_prompt=False) == ["", ""]


@pytest.mark.parametrize(
  "kwargs, message",
  [
    ({"max_tokens": -1}, r"max_new_tokens=-1 must be >= 0\."),
    ({"temperature": -0.5}, r"temperature=-0\.5 must be >= 0 \(0 = greedy\)\."),
    ({"top_p": 0.0}, r"top_p=0\.0 must be in \(0, 1\] \(1 = off\)\."),
  ],
)
def test_invalid_sampling_arguments_are_sampling_errors(sampler, kwargs, message):
  with pytest.raises(errors.SamplingError, match=message):
    sampler.generate_text("the king", **{"max_tokens": 3, **kwargs})


@pytest.fixture(scope="module")
def cli(base, reference, tmp_path_factory):
  empty = tmp_path_factory.mktemp("not-a-run")
  common = [f"--workdir={reference}", "--temperature=0"]
  names = ("long", "zero", "bad_temperature", "not_a_run", "bfloat16")
  results = h.run_many(
    base,
    [
      {"argv": common + [f"--prompt={LONG_PROMPT}", "--max_new_tokens=4"]},
      {"argv": common + ["--prompt=", "--max_new_tokens=0"]},
      {"argv": [f"--workdir={reference}", "--temperature=-1"]},
      {"argv": [f"--workdir={empty}"]},
      {"argv": common + ["--prompt=the king ", "--max_new_tokens=6", "--dtype=bfloat16"]},
    ],
    module="llmjax.sample",
  )
  return dict(zip(names, results)), empty


def test_cli_long_prompt_temperature_zero_matches_the_api(cli, sampler):
  results, _ = cli
  result = results["long"]
  assert result.returncode == 0, result.describe()
  assert "is longer than the context (16); generating from its last 12 tokens" in result.stderr
  want = sampler.generate_text(LONG_PROMPT, 4, temperature=0.0, include_prompt=False)
  assert result.stdout == f"--- sample 0 (step {h.STEPS}) ---\n{LONG_PROMPT}{want}\n"


def test_cli_zero_new_tokens_prints_the_empty_prompt(cli):
  result = cli[0]["zero"]
  assert result.returncode == 0, result.describe()
  assert result.stdout == f"--- sample 0 (step {h.STEPS}) ---\n\n"
  assert "--- 0 tokens in " in result.stderr


def test_cli_bad_arguments_are_one_line(cli):
  results, empty = cli
  assert (
    h.error_line(results["bad_temperature"]) == "Error: temperature=-1.0 must be >= 0 (0 = greedy)."
  )
  assert h.error_line(results["not_a_run"]) == (
    f"Error: {empty}/config.json does not exist: {empty} is not a llmjax run directory. "
    "Train first with python -m llmjax.main --config=... --workdir=..."
  )


def test_cli_bfloat16_samples_from_the_cast_model(cli, sampler):
  result = cli[0]["bfloat16"]
  assert result.returncode == 0, result.describe()
  cast = generate.cast_model(sampler.model, "bfloat16")
  assert jax.tree.leaves(nnx.state(cast))[0].dtype == jnp.bfloat16
  prompt = sampler.tokenizer.encode("the king ")
  want = generate.Generator(cast, eot_id=sampler.tokenizer.eot_id).generate(
    [prompt], 6, params=generate.SamplingParams(temperature=0.0)
  )[0]
  assert want == greedy_by_recomputation(cast, prompt, 6)
  assert result.stdout == (
    f"--- sample 0 (step {h.STEPS}) ---\nthe king {sampler.tokenizer.decode(want)}\n"
  )
