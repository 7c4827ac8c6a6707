"""Fixtures of tests/slmc: one cheap tiny-lm compile through a compile cache, shared by the cache,
report and JUnit tests (a ~10 s build, done once per session)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

CHEAP_RECIPE = """\
passes: [{dead_code_elimination: {}}]
verify:
  num_samples: 1
  gates: {min_cosine: 0.99}
"""


@dataclass
class CachedCompile:
    """A recipe file, a cache holding its compile of tiny-lm on host, and that first artifact."""

    workdir: Path
    recipe: Path
    cache: Path
    artifact: Path
    result: object  # slmc.CompileResult of the compile that filled the cache


@pytest.fixture(scope="session")
def cached_compile(tmp_path_factory):
    import slmc

    workdir = tmp_path_factory.mktemp("cached-compile")
    recipe = workdir / "recipe.yaml"
    recipe.write_text(CHEAP_RECIPE)
    cache = workdir / "cache"
    result = slmc.compile("tiny-lm", recipe, "host", workdir / "first", cache_dir=cache)
    assert result.cache["status"] == "miss"
    return CachedCompile(workdir, recipe, cache, result.artifact, result)
