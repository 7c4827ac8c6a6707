"""pyproject.toml installs every package of the tree (an editable install hides a missing one)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _installed_name(init: Path, package_dir: dict[str, str]) -> str:
    relative = init.parent.relative_to(ROOT)
    for name, folder in sorted(package_dir.items(), key=lambda item: -len(item[1])):
        if relative.parts[: len(Path(folder).parts)] == Path(folder).parts:
            rest = relative.parts[len(Path(folder).parts):]
            return ".".join([name, *rest])
    raise AssertionError(f"{relative} is under no package-dir mapping")


def test_every_package_in_the_tree_is_listed():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir = setuptools["package-dir"]
    inits = [p for folder in package_dir.values() for p in (ROOT / folder).rglob("__init__.py")]
    found = {_installed_name(p, package_dir) for p in inits}
    assert found == set(setuptools["packages"])
