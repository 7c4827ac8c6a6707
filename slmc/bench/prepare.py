"""What the engines of one model share while their files are made (one process, before any timing).

``Preparation(model, max_context, recipe, work)`` loads the benchmark model once and makes, on first
request, the slmc artifact (``artifact()``: ``slmc.compile`` with the run's recipe for the host) and
the ONNX export (``onnx()``: ``slmc.frontend.onnx_export``), which several engines start from. Every
engine's ``prepare`` gets it and returns the JSON its measuring process loads (``slmc.bench.engines``).
With several recipes, ``with_recipe(label, recipe)`` gives each its own artifact (under ``work/recipes/label``)
while the model is loaded once.
"""

from __future__ import annotations

import copy
from functools import cached_property
from pathlib import Path
from typing import Any

from slmc.graph.kv_cache import KVCacheSpec


class EngineUnavailable(Exception):
    """An engine cannot run this model or on this machine; the message says why (reported, not hidden)."""


class Preparation:
    def __init__(self, model: str, max_context: int, recipe: Path, work: Path):
        self.model, self.max_context, self.recipe, self.work = model, max_context, recipe, work
        self.recipe_work = work  # where the files of this recipe go (the artifact, its bundle)

    def with_recipe(self, label: str, recipe: Path) -> Preparation:
        """The same model (loaded once, shared) compiled with ``recipe``, its files under
        ``work/recipes/label``; ``label`` ``""`` is the run's only recipe, its files where they always were."""
        _ = self.spec  # loaded here, once: the copy shares it
        other = copy.copy(self)
        other.__dict__.pop("compiled", None)
        other.recipe, other.recipe_work = recipe, self.work / "recipes" / label if label else self.work
        return other

    @cached_property
    def spec(self) -> Any:
        from slmc.bench.models import bench_model

        return bench_model(self.model, self.max_context)

    @property
    def cache(self) -> KVCacheSpec:
        return self.spec.kv_cache

    @cached_property
    def linear_bytes(self) -> int:
        """Bytes of every matmul weight in fp32 (a decode step reads each once: the roofline)."""
        from slmc.bench.models import linear_elements

        return 4 * linear_elements(self.spec.module)

    @cached_property
    def head_bytes(self) -> int:
        """Bytes of the output head's weight in fp32 (part of ``linear_bytes``; a prefill needs it for one position)."""
        from slmc.bench.models import head_elements

        return 4 * head_elements(self.spec.module)

    @cached_property
    def compiled(self) -> Any:
        import slmc

        return slmc.compile(self.spec, str(self.recipe), "host", self.recipe_work / "artifact")

    def artifact(self) -> Path:
        return Path(self.compiled.artifact)

    @cached_property
    def _onnx(self) -> tuple[Path, dict[str, Any]]:
        from slmc.frontend.onnx_export import export_onnx
        from slmc.graph.ir import trace

        path = self.work / "onnx" / "model.onnx"
        return path, export_onnx(trace(self.spec), path)

    def onnx(self) -> tuple[Path, dict[str, Any]]:
        return self._onnx

    def common(self) -> dict[str, Any]:
        """Fields every engine's info carries: the model, its cache shape."""
        return {"model": self.model, "kv": self.cache.to_json()}


def prepare_model(model: str, instances: list[list[str]], max_context: int, recipes: list[list[str]],
                  work: str) -> dict[str, Any]:
    """Every engine instance's info for ``model`` (``{"unavailable": reason}`` for one that cannot run here).
    ``instances``: ``[name, kind, label]`` each (``slmc.bench.engines.Instance``); ``recipes``: ``[label, path]`` each,
    the first also the recipe of the engines that compile none."""
    from slmc.bench.engines import engine

    prep = Preparation(model, max_context, Path(recipes[0][1]), Path(work))
    per_recipe = {label: prep.with_recipe(label, Path(path)) for label, path in recipes}
    infos: dict[str, Any] = {}
    made: dict[tuple[str, str], Any] = {}  # (kind, label) -> info: a thread override (slmc@1t) runs the same files
    for name, kind, label in instances:
        if (kind, label) not in made:
            try:
                made[kind, label] = engine(kind).prepare(per_recipe[label] if engine(kind).per_recipe else prep)
            except EngineUnavailable as exc:
                made[kind, label] = {"unavailable": str(exc)}
        infos[name] = made[kind, label]
    return {"engines": infos, "max_context": prep.cache.max_context, "linear_bytes_fp32": prep.linear_bytes,
            "head_bytes_fp32": prep.head_bytes,
            "parameters": int(sum(p.numel() for p in prep.spec.module.parameters()))}
