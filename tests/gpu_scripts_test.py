"""Getting ready for a GPU machine without one: the deprecation filter that finds what the next
jax release removes, and benchmarks/gpu_run.sh's path (install wheels into a folder without a
registry, put it on PYTHONPATH, run the suite, write its JSON) exercised on CPU."""

import json
import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _warn_from(module: str, category=DeprecationWarning) -> None:
  """Issues a warning attributed to `module`, as code in that module would."""
  code = compile(f"import warnings\nwarnings.warn('planted', {category.__name__})", module, "exec")
  exec(code, {"__name__": module})  # noqa: S102 - the frame's module name is the point.


@pytest.mark.parametrize(
  "module", ["jax._src.api", "jaxlib.xla_client", "flax.nnx", "optax", "orbax.checkpoint"]
)
def test_a_deprecation_from_the_libraries_fails_the_test(module):
  with pytest.raises(DeprecationWarning, match="planted"):
    _warn_from(module)


@pytest.mark.parametrize("module", ["llmjax.models.gpt", "benchmarks.gpu_suite", "step_test"])
def test_a_deprecated_call_from_this_project_fails_the_test(module):
  # A library warns with a stacklevel that names its caller: the project's module.
  with pytest.raises(DeprecationWarning, match="planted"):
    _warn_from(module)


@pytest.mark.parametrize("module", ["numpy.core", "jaxtyping", "flaxen", "llmjaxy"])
def test_other_modules_and_other_categories_only_warn(module):
  with pytest.warns(DeprecationWarning, match="planted"):
    _warn_from(module)
  with pytest.warns(UserWarning, match="planted"):
    _warn_from("jax._src.api", UserWarning)


def _wheel(folder: pathlib.Path, name: str, version: str, source: str) -> pathlib.Path:
  """A minimal pure-Python wheel holding module `name`."""
  dist = f"{name}-{version}.dist-info"
  files = {
    f"{name}.py": source,
    f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    f"{dist}/top_level.txt": f"{name}\n",
  }
  files[f"{dist}/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{dist}/RECORD"])
  path = folder / f"{name}-{version}-py3-none-any.whl"
  with zipfile.ZipFile(path, "w") as z:
    for arcname, text in files.items():
      z.writestr(arcname, text)
  return path


def _run(args, env=None, timeout=120):
  return subprocess.run(
    ["bash", *args],
    cwd=ROOT,
    env={**os.environ, **(env or {})},
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def test_gpu_run_installs_the_wheels_without_a_registry_and_writes_the_json(tmp_path):
  wheels = tmp_path / "wheels"
  wheels.mkdir()
  _wheel(wheels, "llmjax_probe_pkg", "1.2.3", "VALUE = 42\n")
  out = tmp_path / "out"
  proc = _run(
    [
      "benchmarks/gpu_run.sh",
      f"--wheels={wheels}",
      f"--target={tmp_path / 'site'}",
      f"--out={out}",
      "--smoke",
      "--parts=train_124m",
    ],
    env={"PYTHON": sys.executable, "PIP_CONFIG_FILE": os.devnull},
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  # Installed from the folder alone, into the target, and importable from it by the suite.
  assert (tmp_path / "site" / "llmjax_probe_pkg.py").read_text() == "VALUE = 42\n"
  assert f"llmjax_probe_pkg 1.2.3 from {tmp_path / 'site'}" in proc.stdout
  assert "device: cpu" in proc.stdout
  result = json.loads((out / "gpu_suite.json").read_text())
  assert result["smoke"] is True and result["backend"] == "cpu"
  assert list(result["parts"]) == ["train_124m"] and "error" not in result["parts"]["train_124m"]
  assert "partial" not in result


def test_gpu_run_fails_when_the_wheel_folder_is_missing(tmp_path):
  proc = _run(
    ["benchmarks/gpu_run.sh", f"--wheels={tmp_path / 'none'}", f"--out={tmp_path}", "--smoke"]
  )
  assert proc.returncode != 0
  assert "benchmarks/gpu_wheels.sh" in proc.stderr
  assert not (tmp_path / "gpu_suite.json").exists()


def test_gpu_wheels_refuses_a_folder_over_the_size_limit(tmp_path):
  # --check only measures an existing folder (no registry): 2 MiB of wheels, a 1 MiB limit.
  (tmp_path / "big-1.0-py3-none-any.whl").write_bytes(b"\0" * (2 << 20))
  proc = _run(["benchmarks/gpu_wheels.sh", "--check", str(tmp_path)], {"GPU_WHEELS_LIMIT_MIB": "1"})
  assert proc.returncode != 0 and "over the 1 MiB" in proc.stderr, proc.stderr
  proc = _run(["benchmarks/gpu_wheels.sh", "--check", str(tmp_path)], {"GPU_WHEELS_LIMIT_MIB": "3"})
  assert proc.returncode == 0, proc.stderr


DOWNLOADED = ROOT / ".gpu_wheels"


@pytest.mark.skipif(
  not DOWNLOADED.is_dir(), reason="no .gpu_wheels/: run `bash benchmarks/gpu_wheels.sh` to check it"
)
def test_the_downloaded_wheels_fit_and_hold_what_the_gpu_image_lacks():
  names = {p.name.split("-")[0].lower() for p in DOWNLOADED.glob("*.whl")}
  assert {"grain", "ml_collections", "array_record"} <= names
  # Nothing the GPU image already has: a second copy would shadow the image's own.
  assert not names & {"jax", "jaxlib", "numpy", "flax", "optax", "orbax_checkpoint", "protobuf"}
  assert sum(p.stat().st_size for p in DOWNLOADED.iterdir()) < 64 << 20
  proc = _run(["benchmarks/gpu_wheels.sh", "--check", str(DOWNLOADED)])
  assert proc.returncode == 0, proc.stderr
