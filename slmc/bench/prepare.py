"""What the engines of one model share while their files are made (one process, before any timing).

``Preparation(model, max_context, recipe, work)`` loads the benchmark model once and makes, on first
request, the slmc artifact (``artifact()``: ``slmc.compile`` with the run's recipe for the host) and
the ONNX export (``onnx()``: ``slmc.frontend.onnx_export``), which several engines start from. Every
engine's ``prepare`` gets it and returns the JSON its measuring process loads (``slmc.bench.engines``).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from slmc.graph.kv_cache import KVCacheSpec


class EngineUnavailable(Exception):
    """An engine cannot run this model or on this machine; the message says why (reported, not hidden)."""


class Preparation:
    def __init__(self, model: str, max_context: int, recipe: Path, work: Path):
        self.model, self.max_context, self.recipe, self.work = model, max_context, recipe, work

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
    def compiled(self) -> Any:
        import slmc

        return slmc.compile(self.spec, str(self.recipe), "host", self.work / "artifact")

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


def prepare_model(model: str, engines: list[str], max_context: int, recipe: str, work: str) -> dict[str, Any]:
    """Every engine's info for ``model`` (``{"unavailable": reason}`` for one that cannot run here)."""
    from slmc.bench.engines import engine

    prep = Preparation(model, max_context, Path(recipe), Path(work))
    infos: dict[str, Any] = {}
    for name in engines:
        try:
            infos[name] = engine(name).prepare(prep)
        except EngineUnavailable as exc:
            infos[name] = {"unavailable": str(exc)}
    return {"engines": infos, "max_context": prep.cache.max_context, "linear_bytes_fp32": prep.linear_bytes,
            "parameters": int(sum(p.numel() for p in prep.spec.module.parameters()))}
