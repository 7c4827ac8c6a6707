"""Exporting an slmc graph (before or after passes) to ONNX, to compare with other runtimes.

``export_onnx`` runs ``torch.onnx.export(graph.module, graph.example_inputs, dynamo=True,
dynamic_shapes=graph.dynamic_shapes)``: the graph is an ATen-level ``torch.fx.GraphModule`` that
``torch.export`` already traced once, so the dynamo exporter re-traces it without surprises, and
the dynamic dims keep their ``Dim`` names (``dim_param`` in the file, e.g. ``tokens``). The
exporter's ONNX optimizer runs (constant folding, for instance of transposed weights, so some
initializers get generated names such as ``val_12``). The TorchScript exporter
(``dynamo=False``) is no fallback: it starts by calling ``module.train(False)``, which the
``GraphModule`` that ``torch.export`` unlifts refuses (``NotImplementedError: Calling train() is
not supported yet``, torch 2.13).

Weights go inside the ``.onnx`` file, or, when they exceed protobuf's 2 GB limit, into one
external data file ``<name>.onnx.data`` next to it. The written file is checked with
``onnx.checker``. Needs the ``onnxscript`` package (the dynamo exporter's op library).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch

from slmc.errors import InputError, LoweringError, exception_summary
from slmc.graph.ir import EXPORT_FAILURES, Graph
from slmc.frontend.onnx_import import onnx_signature

PROTOBUF_LIMIT = 2**31 - 1
# Headroom for the graph itself: above this many weight bytes the weights go to external data.
EXTERNAL_DATA_THRESHOLD = PROTOBUF_LIMIT - 64 * 2**20


def _output_count(graph: Graph) -> int:
    output = next(n for n in graph.graph.nodes if n.op == "output")
    value = output.args[0]
    return len(value) if isinstance(value, (tuple, list)) else 1


def _output_names(graph: Graph) -> list[str]:
    count = _output_count(graph)
    names = list(getattr(graph, "output_names", None) or ())
    return [names[i] if i < len(names) else f"output_{i}" for i in range(count)]


def export_onnx(graph: Graph, path: str | Path, opset: int = 18) -> dict[str, Any]:
    """Write ``graph`` as an ONNX model at ``path``; returns a report.

    Report: ``path``, ``opset``, ``bytes`` (the file plus external data), ``external_data`` (file
    names, empty when the weights are inside), ``nodes``, ``initializers``, ``inputs``/``outputs``
    (as in the manifest signature), ``dynamic_dims``, ``exporter``, ``seconds``.
    Raises ``LoweringError`` when the exporter fails, ``InputError`` when ``path`` is unusable.
    """
    start = time.perf_counter()
    path = Path(path)
    if path.exists() and not path.is_file():
        raise InputError(f"cannot write the ONNX model to {path}: it exists and is not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the directory for {path}: {exc}") from exc
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it; say so clearly)
    except ImportError as exc:
        raise LoweringError("exporting to ONNX needs the 'onnxscript' package (pip install onnxscript)") from exc

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*training mode.*")
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            with torch.no_grad():
                program = torch.onnx.export(
                    graph.module,
                    tuple(graph.example_inputs),
                    dynamo=True,
                    dynamic_shapes=graph.dynamic_shapes,
                    input_names=list(graph.input_names),
                    output_names=_output_names(graph),
                    opset_version=opset,
                    optimize=True,
                    verbose=False,
                )
        except (torch.onnx.OnnxExporterError, *EXPORT_FAILURES) as exc:
            raise LoweringError(f"torch.onnx.export (dynamo) could not export the graph: {exception_summary(exc)}") from exc
    if program is None:
        raise LoweringError("torch.onnx.export returned no program")

    weight_bytes = sum(int(v.const_value.nbytes) for v in program.model.graph.initializers.values() if v.const_value is not None)
    external = weight_bytes > EXTERNAL_DATA_THRESHOLD
    data_file = path.with_name(path.name + ".data")
    for stale in (path, data_file):
        if stale.is_file():
            stale.unlink()
    try:
        program.save(str(path), external_data=external)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot write the ONNX model to {path}: {exc}") from exc

    try:
        onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise LoweringError(f"the exported ONNX model {path} fails the ONNX checker: {exception_summary(exc, 3)}") from exc

    model = onnx.load(str(path), load_external_data=False)
    data_files = sorted({
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    })
    signature = onnx_signature(path)
    return {
        "path": str(path),
        "opset": next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), opset),
        "bytes": path.stat().st_size + sum((path.parent / f).stat().st_size for f in data_files),
        "weight_bytes": weight_bytes,
        "external_data": data_files,
        "nodes": len(model.graph.node),
        "initializers": len(model.graph.initializer),
        "inputs": signature["inputs"],
        "outputs": signature["outputs"],
        "dynamic_dims": sorted(signature["dynamic_dims"]),
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}, onnx {onnx.__version__}",
        "seconds": round(time.perf_counter() - start, 3),
    }
