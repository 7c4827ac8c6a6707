"""The cache's part in one compile: key after tracing, fetch on a hit, store after a verified build.

A hit returns the stored artifact byte for byte (its manifest included, with the pass timings
of the compile that stored it); whether it was a hit is reported in ``CompileResult.cache`` and
the ``--json`` output, never in the artifact, so that the artifact stays byte-identical.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from slmc.artifact.manifest import Manifest
from slmc.cache.store import CompileCache, resolve_cache_dir
from slmc.cache.key import cache_key, key_components
from slmc.graph.ir import Graph, ModelSpec
from slmc.spec.recipe import Recipe
from slmc.spec.target import TargetDescriptor


class CacheSession:
    """The cache as one compile uses it; ``open`` returns None when caching is off."""

    def __init__(self, root: Path):
        self.store = CompileCache(root)
        self.key: str | None = None
        self.components: dict[str, str] = {}
        self.status = "miss"
        self.note: str | None = None
        self.seconds = 0.0

    @classmethod
    def open(cls, cache_dir: str | Path | None, enabled: bool) -> CacheSession | None:
        root = resolve_cache_dir(cache_dir, enabled)
        return cls(root) if root is not None else None

    def lookup(self, spec: ModelSpec, original: Graph, calibration: Sequence[tuple[torch.Tensor, ...]], recipe: Recipe,
               target: TargetDescriptor, device: str | None, out_dir: Path) -> Manifest | None:
        """The manifest of the artifact now in ``out_dir`` on a hit, else None."""
        start = time.perf_counter()
        self.components = key_components(spec, original, recipe, target, calibration, device)
        self.key = cache_key(self.components)
        manifest = self.store.fetch(self.key, out_dir)
        self.status = "hit" if manifest is not None else "miss"
        self.seconds = time.perf_counter() - start
        return manifest

    def record(self, artifact: Path, manifest: Manifest) -> None:
        """Store a verified artifact; a cache that cannot take it leaves the compile successful (noted)."""
        if self.key is None:
            raise ValueError("record() before lookup()")
        info = {"model": manifest.model.name, "target": manifest.target.name, "components": self.components}
        try:
            stored = self.store.store(self.key, artifact, info)
        except OSError as exc:
            self.note = f"not stored: {exc}"
            return
        if not stored:
            self.note = "an identical entry was stored by a concurrent compile"

    def to_json(self) -> dict[str, Any]:
        data = {"status": self.status, "key": self.key, "dir": str(self.store.root), "components": self.components,
                "seconds": round(self.seconds, 3)}
        if self.note is not None:
            data["note"] = self.note
        return data
