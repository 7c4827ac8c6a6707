"""The runtimes a benchmark compares, each as a step function under the causal-LM cache contract.

Every engine takes ``(ids, keys, values)`` numpy arrays (``slmc.graph.kv_cache``) and returns
the logits. ``slmc``: the artifact ``slmc.compile`` writes for the recipe (fp32 unless the recipe
quantizes), run by ``slmc.load``. ``torch``: the same traced model in PyTorch eager, fp32, with
``threads`` intra-op threads. ``ort-fp32``: the traced graph exported with ``slmc.frontend.onnx_export``
and run by ONNX Runtime's CPU provider with ``threads`` intra-op threads. ``ort-int8``: that ONNX
model after ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, activations quantized
per call; Jacob et al., CVPR 2018).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ENGINES = ("slmc", "torch", "ort-fp32", "ort-int8")
Step = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Engine:
    name: str
    step: Step
    weight_bytes: int  # bytes of matmul weights read per decode step (roofline)
    setup_seconds: float
    details: dict[str, Any]


def slmc_engine(spec: Any, recipe: Path, work: Path, linear_bytes: int) -> Engine:
    import slmc

    start = time.perf_counter()
    result = slmc.compile(spec, str(recipe), "host", work / "artifact")
    model = slmc.load(result.artifact)
    manifest = result.manifest
    ratio = manifest.weights.bytes / max(1, 4 * manifest.model.parameters)
    details = {"tuning": manifest.tuning, "schedule_notes": manifest.lowering_notes,
               "weights_bytes": manifest.weights.bytes, "verification_passed": manifest.verification.passed}
    details["kv_cache"] = manifest.kv_cache.mode
    step = _resident_step(model.decoder()) if model.resident else (lambda i, k, v: model.step(i, k, v)[0])
    return Engine("slmc", step, int(linear_bytes * ratio), time.perf_counter() - start, details)


def _resident_step(decoder: Any) -> Step:
    """The copy contract's step over a resident cache (``slmc.artifact.resident_cache``) as a benchmark
    uses it: a cache is copied in once when it is not the one copied in last, and each call appends
    after its ``P`` slots (what a decode step at that context does), without copying it again."""
    loaded: list[Any] = [None]

    def step(ids: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        if loaded[0] is not keys:
            decoder.load(keys, values)
            loaded[0] = keys
        decoder.truncate(keys.shape[3] - 1)
        return decoder.feed(ids)

    return step


def torch_engine(spec: Any, threads: int, linear_bytes: int) -> Engine:
    import torch

    torch.set_num_threads(threads)
    module = spec.module.eval()

    def step(ids: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(ids), torch.from_numpy(keys), torch.from_numpy(values))[0].numpy()

    return Engine("torch", step, linear_bytes, 0.0, {"threads": torch.get_num_threads()})


def _ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # see slmc.bench.child
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def step(ids: np.ndarray, keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        return session.run(None, dict(zip(names, (ids, keys, values))))[0]

    return step


def ort_engines(graph: Any, threads: int, work: Path, linear_bytes: int, fp32: bool = True, int8: bool = True) -> list[Engine]:
    """ONNX Runtime fp32 (``fp32``) and (``int8``) its dynamic int8 quantization, from one export of ``graph``."""
    from slmc.frontend.onnx_export import export_onnx

    start = time.perf_counter()
    exported = work / "model.onnx"
    report = export_onnx(graph, exported)
    engines = [Engine("ort-fp32", _ort_session(exported, threads), linear_bytes, time.perf_counter() - start,
                      {"onnx_bytes": report["bytes"]})] if fp32 else []
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        start = time.perf_counter()
        quantized = work / "model-int8.onnx"
        quantize_dynamic(str(exported), str(quantized), weight_type=QuantType.QInt8,
                         use_external_data_format=bool(report["external_data"]))
        size = sum(f.stat().st_size for f in work.glob("model-int8.onnx*"))
        engines.append(Engine("ort-int8", _ort_session(quantized, threads), linear_bytes // 4,
                              time.perf_counter() - start, {"onnx_bytes": size}))
    return engines
