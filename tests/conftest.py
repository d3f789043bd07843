"""Test setup: 8 fake CPU devices, set before JAX initialises.

Tests compile many tiny programs and run each for a few steps, so XLA's CPU backend
optimisations are turned off: compiling gets several times faster, results are unchanged.
"""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
  os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Many tests compile the same tiny programs (and pytest-xdist workers inherit this
# environment): one persistent compilation cache for the session turns the repeats into
# cache reads. Results are unchanged: a cached executable is the compiled one.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="llmjax-tests-xla-cache-")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
