"""The package's layering: each package imports only packages below it, nothing imports a
package above it, there is no import circle, and imports sit at the top of their module
except the listed optional heavy dependencies.

Layers, bottom to top (see docs/architecture.md):

  util < parallel < models < config.schema < pretrained < data < inference < config
       < runs < train < experiments < jobs < api < cli

`config.schema` declares every config key and default once; its `model` section is the
registered architecture's config dataclass, so it sits on `models` and every layer above
may read a default from it; the rest of `config` (loading, validation, help) sits above
the layers whose sections it checks.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "llmjax"
LAYERS = (
  "util",
  "parallel",
  "models",
  "config.schema",
  "pretrained",
  "data",
  "inference",
  "config",
  "runs",
  "train",
  "experiments",
  "jobs",
  "api",
  "cli",
)
# Imported inside the function that needs them: heavy or optional, and needed by few paths.
OPTIONAL_INSIDE = {
  "matplotlib",
  "mlflow",
  "spacy",
  "datasets",
  "pyarrow",
  "huggingface_hub",
  "torch",
  "transformers",
}


def modules() -> dict[str, ast.Module]:
  out = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    out[name] = ast.parse(path.read_text(), str(path))
  return out


def imported(name: str, tree: ast.Module) -> list[tuple[str, ast.stmt]]:
  """(module, statement) for every llmjax module `name` imports; `from a import b` counts
  as `a.b` when that is a module."""
  is_package = (PACKAGE.parent / pathlib.Path(*name.split("."))).is_dir()
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [(a.name, node) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parent = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
        base = ".".join(parent + ([base] if base else []))
      out += [(f"{base}.{a.name}", node) for a in node.names]
  return [(m, n) for m, n in out if m.split(".")[0] == "llmjax"]


def layer(module: str) -> str | None:
  if module == "llmjax.config.schema":
    return "config.schema"
  parts = module.split(".")
  return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def resolve(module: str, known: set[str]) -> str:
  """`llmjax.a.b.NAME` -> the longest prefix that is a module."""
  while module not in known and "." in module:
    module = module.rsplit(".", 1)[0]
  return module


def test_every_module_sits_in_a_layer():
  loose = [m for m in modules() if m.count(".") == 1 and layer(m) is None]
  # The top level keeps only the package root and thin `python -m llmjax.X` shims.
  shims = {
    "main",
    "sample",
    "recite",
    "export",
    "notes",
    "report",
    "compare_samples",
    "assets",
    "track",
  }
  assert sorted(m for m in loose if m.split(".")[1] not in shims) == []


def test_top_level_shims_only_forward_to_cli():
  found = modules()
  known = set(found)
  for name, tree in found.items():
    if name.count(".") == 1 and layer(name) is None:
      targets = {resolve(m, known) for m, _ in imported(name, tree)}
      assert all(layer(t) == "cli" for t in targets), (name, targets)


def test_no_module_imports_a_layer_above_its_own():
  found = modules()
  known = set(found)
  upward = []
  for name, tree in found.items():
    own = layer(name)
    if own is None:
      continue
    for target, _ in imported(name, tree):
      theirs = layer(resolve(target, known))
      if theirs is not None and LAYERS.index(theirs) > LAYERS.index(own):
        upward.append(f"{name} imports {target} ({own} < {theirs})")
  assert upward == []


def test_no_import_circle():
  found = modules()
  known = set(found)
  graph = {
    name: {resolve(t, known) for t, _ in imported(name, tree)} - {name}
    for name, tree in found.items()
  }
  # A package's __init__ re-exporting its own modules is not a circle through them.
  for name in graph:
    graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
  state: dict[str, int] = {}
  path: list[str] = []

  def visit(node):
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        pytest.fail("import circle: " + " -> ".join(path[path.index(nxt) :] + [nxt]))
      if nxt not in state:
        visit(nxt)
    path.pop()
    state[node] = 2

  for node in sorted(graph):
    if node not in state:
      visit(node)


def test_imports_are_at_module_top_except_optional_heavy_dependencies():
  inside = []
  for name, tree in modules().items():
    for fn in ast.walk(tree):
      if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        continue
      for node in ast.walk(fn):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
          roots = (
            {a.name.split(".")[0] for a in node.names}
            if isinstance(node, ast.Import)
            else {(node.module or "").split(".")[0]}
          )
          if not roots <= OPTIONAL_INSIDE and name != "llmjax":
            inside.append(f"{name}:{node.lineno} {ast.unparse(node)}")
  assert inside == []


def test_checker_sees_a_planted_upward_import(tmp_path):
  tree = ast.parse("from llmjax.train import runner\n")
  targets = [t for t, _ in imported("llmjax.models.fake", tree)]
  assert targets == ["llmjax.train.runner"]
  assert LAYERS.index(layer(targets[0])) > LAYERS.index(layer("llmjax.models.fake"))
