"""No module of xfactor_core imports a package on a floor above its own.

The floors (docs/ARCHITECTURE.md, "Map of the packages"), lowest first. A
module may import modules of its own floor and of the floors below. Imports
inside functions count too: the one that ran up a floor (metrics importing
training) was such a lazy import.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = "xfactor_core"
PACKAGE = pathlib.Path(__file__).resolve().parent.parent / ROOT

FLOORS: tuple[tuple[str, ...], ...] = (
    # Foundations: no other module of the project.
    (ROOT, "xfactor_core.runtime", "xfactor_core.benchmarking",
     "xfactor_core.msgpack_stream", "xfactor_core.inference.model_frames",
     "xfactor_core.inference.media"),
    ("xfactor_core.models",),  # the networks
    # Measurements (true flow's fit, images, cameras, TPS) and the
    # checkpoint format.
    ("xfactor_core.metrics", "xfactor_core.checkpoints"),
    # The synthetic world, its true flow and labelled pairs; the video loader.
    ("xfactor_core.data",),
    # The published models and the transfer pipeline.
    ("xfactor_core.fetch", "xfactor_core.fetch_testing",
     "xfactor_core.inference"),
    ("xfactor_core.evaluate", "xfactor_core.transfer"),  # entry points
    ("xfactor_core.training",),  # release.py ships runs with evaluate.py
    ("xfactor_core.configs", "xfactor_core.train"),
    ("xfactor_core.app",),
)


def module_name(path: pathlib.Path) -> str:
  """``xfactor_core/data/true_flow.py`` -> ``xfactor_core.data.true_flow``."""
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, pathlib.Path]:
  """Every module of the package: name -> file."""
  return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def floor_of(name: str) -> int | None:
  """The floor of a module: its longest listed prefix (the root package
  matches only itself). None when no entry lists it."""
  best, floor = "", None
  for index, entries in enumerate(FLOORS):
    for entry in entries:
      inside = name == entry or (entry != ROOT
                                 and name.startswith(entry + "."))
      if inside and len(entry) > len(best):
        best, floor = entry, index
  return floor


def imported_modules(source: str, name: str, is_package: bool,
                     known: set[str]) -> list[tuple[int, str]]:
  """``(line, module)`` of every project import in ``source`` (module
  ``name``), at any depth of the tree. ``from a import b`` names ``a.b``
  when that is a module, else ``a``."""
  package = name if is_package else name.rpartition(".")[0]
  found = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      found += [(node.lineno, a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
      for alias in node.names:
        full = f"{base}.{alias.name}"
        found.append((node.lineno, full if full in known else base))
  return [(line, m) for line, m in found
          if m == ROOT or m.startswith(ROOT + ".")]


def upward_imports(modules: dict[str, str], packages: set[str]
                   ) -> list[str]:
  """Each import of a higher floor, as ``"importer:line -> imported"``."""
  known = set(modules)
  bad = []
  for name, source in modules.items():
    own = floor_of(name)
    for line, imported in imported_modules(source, name, name in packages,
                                           known):
      theirs = floor_of(imported)
      if theirs is not None and own is not None and theirs > own:
        bad.append(f"{name}:{line} -> {imported} (floor {own} imports "
                   f"floor {theirs})")
  return bad


def test_every_module_has_a_floor():
  unplaced = [n for n in all_modules() if floor_of(n) is None]
  assert not unplaced, f"add these to FLOORS: {unplaced}"
  assert floor_of("xfactor_core.data.synthetic") == 3
  assert floor_of("xfactor_core.inference.media") == 0
  assert floor_of("xfactor_core.inference.pipeline") == 4


def test_no_module_imports_up_a_floor():
  files = all_modules()
  packages = {n for n, p in files.items() if p.name == "__init__.py"}
  modules = {n: p.read_text() for n, p in files.items()}
  assert len(modules) > 50  # the walk found the package
  assert upward_imports(modules, packages) == []


def test_the_check_sees_lazy_and_relative_imports():
  """A metrics module importing training inside a function, or data going
  up through a relative import, is reported."""
  lazy = ("def f():\n"
          "  from xfactor_core.training import objective\n"
          "  return objective\n")
  relative = "from ..training import objective\n"
  same_floor = "from xfactor_core.models import flow\n"
  known = {"xfactor_core.training", "xfactor_core.training.objective",
           "xfactor_core.models", "xfactor_core.models.flow"}
  modules = {"xfactor_core.metrics.lazy": lazy,
             "xfactor_core.data.relative": relative,
             "xfactor_core.data.fine": same_floor}
  bad = upward_imports({**modules, **{k: "" for k in known}}, set())
  assert len(bad) == 2
  assert bad[0].startswith("xfactor_core.metrics.lazy:2 -> "
                           "xfactor_core.training.objective")
  assert bad[1].startswith("xfactor_core.data.relative:1 -> "
                           "xfactor_core.training.objective")
