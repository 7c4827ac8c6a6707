"""slmc's layering (pyproject.toml, ``[tool.importlinter]``): no upward import, passes use only the
pass-author API, no import cycle between slmc's modules, and every subpackage says what it may import.

import-linter and grimp find a package by walking its directory, but ``slmc.passes`` and ``slmc.targets``
live at the top of the repository (``passes/``, ``targets/``). So the checks run, in a child process, on
a staged tree: a ``slmc/`` directory of symlinks to every entry of the real one, plus ``passes`` and
``targets``. The same checks by hand: ``python -m pytest tests/test_layering.py``.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"

LINT_IMPORTS = """
import sys
from importlinter.cli import lint_imports_command
sys.argv = ["lint-imports", sys.argv[1], "--no-cache"]
lint_imports_command()
"""

# Strongly connected components of slmc's module import graph (TYPE_CHECKING imports left out), as JSON.
CYCLES = """
import json
import grimp
import networkx as nx
graph = grimp.build_graph("slmc", exclude_type_checking_imports=True, cache_dir=None)
edges = nx.DiGraph()
for module in graph.modules:
    edges.add_node(module)
    for imported in graph.find_modules_directly_imported_by(module):
        edges.add_edge(module, imported)
print(json.dumps(sorted(sorted(c) for c in nx.strongly_connected_components(edges) if len(c) > 1)))
"""


def _stage(root: Path) -> Path:
    """``root/slmc``: symlinks to every entry of slmc/, and ``passes`` / ``targets`` where they install."""
    package = root / "slmc"
    package.mkdir()
    for entry in (REPO / "slmc").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    (package / "passes").symlink_to(REPO / "passes")
    (package / "targets").symlink_to(REPO / "targets")
    return root


def _run(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script, str(PYPROJECT)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_the_layer_contracts_are_kept(tmp_path):
    result = _run(LINT_IMPORTS, _stage(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_layer_contract(tmp_path):
    root = _stage(tmp_path)
    planted = root / "slmc" / "progress.py"
    planted.unlink()
    shutil.copyfile(REPO / "slmc" / "progress.py", planted)
    with planted.open("a", encoding="utf-8") as f:
        f.write("\n\ndef _planted():\n    from slmc.driver import compile  # an upward import\n")
    result = _run(LINT_IMPORTS, root)
    assert result.returncode != 0
    assert "slmc.progress is not allowed to import slmc.driver" in result.stdout


def test_a_pass_importing_beyond_the_pass_author_api_breaks_its_contract(tmp_path):
    root = _stage(tmp_path)
    (root / "slmc" / "passes").unlink()
    shutil.copytree(REPO / "passes", root / "slmc" / "passes", ignore=shutil.ignore_patterns("__pycache__"))
    with (root / "slmc" / "passes" / "fuse.py").open("a", encoding="utf-8") as f:
        f.write("\n\nfrom slmc.data.texts import load_texts  # not pass-author API\n")
    result = _run(LINT_IMPORTS, root)
    assert result.returncode != 0
    assert "slmc.passes is not allowed to import slmc.data" in result.stdout


def test_slmc_has_no_import_cycles(tmp_path):
    result = _run(CYCLES, _stage(tmp_path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_the_cycle_check_finds_a_planted_cycle(tmp_path):
    root = _stage(tmp_path)
    for module, imported in (("errors", "progress"), ("progress", "errors")):  # errors -> progress -> errors
        planted = root / "slmc" / f"{module}.py"
        planted.unlink()
        shutil.copyfile(REPO / "slmc" / f"{module}.py", planted)
        with planted.open("a", encoding="utf-8") as f:
            f.write(f"\n\nfrom slmc import {imported}\n")
    result = _run(CYCLES, root)
    assert result.returncode == 0, result.stderr
    assert ["slmc.errors", "slmc.progress"] in json.loads(result.stdout)


SUBPACKAGES = sorted([p.parent for p in (REPO / "slmc").glob("*/__init__.py")] + [REPO / "passes", REPO / "targets"])


@pytest.mark.parametrize("package", SUBPACKAGES, ids=lambda p: p.name)
def test_every_subpackage_says_what_it_is_for_and_what_it_may_import(package):
    docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8")))
    assert docstring, f"{package}/__init__.py has no docstring"
    assert "import" in docstring, f"{package}/__init__.py's docstring does not say what the package may import"
