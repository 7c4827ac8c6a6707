"""The NPU backend's step after the build (``slmc.backend.kinds.npu``): regions, integer reference,
QDQ export, cross-check, report.

Preconditions: ``target`` has an ``npu`` section (kind ``npu``); ``graph`` is the compiled (quantized)
graph and ``module`` the Relax module lowered from it (``slmc.backend.lowering.to_relax``); ``samples`` are graph inputs.

What is verified, and how (recorded as ``verification.npu``): the NPU regions' integer arithmetic,
built by TVM for the host CPU (``integer_kernel``), must equal the numpy fixed-point reference bit
for bit, and must agree with ONNX Runtime executing the QDQ export within one int8 step
(``MAX_LSB``) with at least ``MIN_EQUAL`` of the outputs identical, on the int8 codes the regions
received on the calibration samples. Nothing runs on an NPU; cycles are estimates from the descriptor.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import tvm

from slmc.artifact.manifest import GateResult, IntegerComparison, NpuCheck, Verification
from slmc.artifact.npu_toolchain import NpuToolchain
from slmc.errors import CompileError
from slmc.graph.ir import Graph
from slmc.npu.fallback import cpu_fallbacks
from slmc.npu.fixed_point import integer_linear
from slmc.npu.gates import npu_gate_results
from slmc.npu.integer_kernel import build_reference, run_reference
from slmc.npu.layers import NpuLayer, offloadable_layers
from slmc.npu.partition import partition
from slmc.npu.qdq_onnx import OPSET, qdq_model, run_onnxruntime
from slmc.npu.report import partition_cost
from slmc.npu.macs import model_macs_per_token
from slmc.npu.toolchain import ToolchainFiles, ToolchainRun, run_toolchain
from slmc.spec.recipe import Gates
from slmc.spec.target import TargetDescriptor

QDQ_FILE = "npu_regions.onnx"
REPORT_FILE = "npu_partitions.json"
MAX_LSB = 1  # ORT rescales in float: a value within float error of a rounding tie may land one step away
MIN_EQUAL = 0.999  # ...which only ties do: a systematic one-step error (a wrong scale or rounding) fails
MAX_SAMPLES = 2


@dataclass
class NpuOffload:
    """The partition report, the QDQ model, and the integer cross-check record."""

    report: dict[str, Any]
    qdq: onnx.ModelProto | None
    check: NpuCheck
    toolchain: NpuToolchain | None = None
    files: ToolchainFiles | None = None
    gates: list[GateResult] | None = None

    def write(self, directory: Path) -> None:
        (directory / REPORT_FILE).write_text(json.dumps(self.report, indent=2) + "\n", encoding="utf-8")
        if self.qdq is not None:
            onnx.save(self.qdq, str(directory / QDQ_FILE))
        if self.files is not None:
            self.files.write(directory)

    def manifest_entries(self) -> dict[str, Any]:
        """The manifest's ``npu`` (the partition report) and ``npu_toolchain`` (TOSA and Vela), when run."""
        entries: dict[str, Any] = {"npu": self.report}
        if self.toolchain is not None:
            entries["npu_toolchain"] = self.toolchain.model_dump(mode="json")
        return entries

    def record(self, verification: Verification) -> Verification:
        """``verification`` with ``npu`` and the NPU gates added; ``passed`` also requires both."""
        passed = verification.passed and self.check.passed if self.check.executed else verification.passed
        gates = list(self.gates or [])
        passed = passed and all(g.passed for g in gates)
        return verification.model_copy(update={"npu": self.check, "passed": passed, "gates": [*verification.gates, *gates]})


def _compare(name: str, expected: Sequence[np.ndarray], actual: Sequence[np.ndarray]) -> dict[str, Any]:
    diffs = [np.abs(e.astype(np.int32) - a.astype(np.int32)) for e, a in zip(expected, actual)]
    elements = int(sum(d.size for d in diffs))
    mismatched = int(sum((d > 0).sum() for d in diffs))
    return {"compared": name, "elements": elements, "max_abs_lsb": int(max((d.max() for d in diffs), default=0)),
            "elements_differing": mismatched, "fraction_equal": 1.0 - mismatched / elements if elements else 1.0}


def _cross_check(layers: list[NpuLayer], target: TargetDescriptor, model: onnx.ModelProto,
                 samples: int, tools: ToolchainRun | None) -> NpuCheck:
    rounding = target.npu.rounding
    codes = [layer.codes for layer in layers]
    _, executable = build_reference(layers, rounding)
    tvm_out = run_reference(executable, codes)
    numpy_out = [integer_linear(layer.codes, layer.qweight, layer.bias_codes, layer.multiplier, layer.shift, rounding)
                 for layer in layers]
    import onnxruntime

    ort_out = run_onnxruntime(model, codes)
    exact = _compare("TVM integer kernels vs numpy fixed-point reference", numpy_out, tvm_out)
    ort = _compare("TVM integer kernels vs ONNX Runtime on the QDQ export", ort_out, tvm_out)
    tosa = None
    how_tosa = ""
    if tools is not None:
        tosa = _compare("TVM integer kernels vs the TOSA reference model on each partition's TOSA graph",
                        tools.reference_outputs, tvm_out)
        how_tosa = (f"; and bit for bit with Arm's TOSA reference model (tosa-tools {tools.record.tosa_tools}) executing "
                    f"each partition's TOSA {tools.record.tosa_version} {tools.record.tosa_profile} graph "
                    "(CONV2D int8 x int8 -> int32, RESCALE), the graph Vela compiles")
    return NpuCheck(
        executed=True,
        how=(f"NPU regions lowered by slmc to integer TVM kernels (int8 x int8 -> int32, fixed-point requantize "
                f"with {rounding} rounding, saturation to int8), built for and executed on the host CPU, not on an "
                f"NPU; compared bit for bit with a numpy fixed-point reference and with ONNX Runtime "
                f"{onnxruntime.__version__} (CPUExecutionProvider) executing the QDQ export (opset {OPSET}) on the "
                f"int8 input codes each region received while the graph ran on {samples} calibration sample(s) "
                f"({codes[0].shape[0]} rows per region){how_tosa}"),
        tolerance={"tvm_vs_numpy_max_lsb": 0, "tvm_vs_onnxruntime_max_lsb": MAX_LSB,
                   "tvm_vs_onnxruntime_min_fraction_equal": MIN_EQUAL,
                   **({"tvm_vs_tosa_reference_max_lsb": 0} if tosa is not None else {})},
        tvm_vs_numpy=IntegerComparison.model_validate(exact),
        tvm_vs_onnxruntime=IntegerComparison.model_validate(ort),
        tosa_reference=IntegerComparison.model_validate(tosa) if tosa is not None else None,
        passed=(exact["max_abs_lsb"] == 0 and ort["max_abs_lsb"] <= MAX_LSB and ort["fraction_equal"] >= MIN_EQUAL
                and (tosa is None or tosa["elements_differing"] == 0)),
    )


def _weight_param(layer: NpuLayer) -> str:
    return "p_" + layer.weight.replace(".", "_")


def npu_offload(graph: Graph, module: tvm.IRModule, target: TargetDescriptor,
                samples: Sequence[tuple[torch.Tensor, ...]], gates: Gates | None = None) -> NpuOffload:
    """Partition, report, export and cross-check the NPU regions of ``graph``/``module``; with
    ``npu.tosa_profile`` also lower them to TOSA, run the TOSA reference model and (``npu.vela``) Vela
    (``slmc.npu.toolchain``); measure the recipe's NPU ``gates`` (``slmc.npu.gates``)."""
    samples = list(samples[:MAX_SAMPLES]) or [graph.example_inputs]
    layers = offloadable_layers(graph, samples) if target.supports_op("linear") else []
    _, regions = partition(module) if layers else (None, [])
    by_param = {_weight_param(layer): layer for layer in layers}
    missing = [r.weights for r in regions if len(r.weights) != 1 or r.weights[0] not in by_param]
    if missing or len(regions) != len(layers):
        raise CompileError(f"NPU partitioning found {len(regions)} regions for {len(layers)} w8a8 layers "
                           f"(unmatched region weights: {missing[:3]}): the Relax module and the graph disagree")
    ordered = [by_param[r.weights[0]] for r in regions]
    tokens = max(1, ordered[0].codes.shape[0] // len(samples)) if ordered else 0
    macs = model_macs_per_token(graph, max(tokens, 1))  # attention at the partitions' tokens (1 if there are none)
    partitions = [{"index": i, "function": r.function, "composites": r.composites, "layer": layer.node,
                   "weight": layer.weight, "shape": {"in": layer.in_features, "out": layer.out_features},
                   "scales": {"activation": layer.activation_scale, "output": layer.output_scale},
                   "per_token": partition_cost(layer, 1, target), "at_tokens": partition_cost(layer, tokens, target)}
                  for i, (r, layer) in enumerate(zip(regions, ordered))]
    total_cycles = sum(p["at_tokens"]["cycles"]["estimate"] for p in partitions)
    report = {
        "target": target.name,
        "executed_on_npu": False,
        "note": ("nothing was executed on an NPU. The artifact's library runs the whole graph on the host CPU "
                 "(NPU regions as slmc's w8a8 kernels: int8 x int8 -> int32, float rescale); the NPU regions' "
                 f"int8-output arithmetic is exported as {QDQ_FILE} and cross-checked in verification.npu"),
        "partitioning": "relax.transform.FuseOpsByPattern (pattern npu.w8a8_linear) + MergeCompositeFunctions",
        "partitions": partitions,
        "fallbacks": cpu_fallbacks(graph, target),
        "totals": {"partitions": len(partitions), "macs_at_tokens": sum(p["at_tokens"]["macs"] for p in partitions),
                   "tokens": tokens, "estimated_cycles_at_tokens": total_cycles,
                   "estimated_seconds_at_tokens": total_cycles / target.npu.clock_hz,
                   "partitions_fitting_sram": sum(p["at_tokens"]["fits"] for p in partitions),
                   "model_macs_per_token": macs.total, "attention_macs_per_token": sum(macs.attention.values()),
                   "attention_context_tokens": macs.context},
        "files": {"qdq_onnx": QDQ_FILE if ordered else None},
    }
    gates = gates or Gates()
    if not ordered:
        results = npu_gate_results(gates, report, None, macs)
        return NpuOffload(report, None, NpuCheck(executed=False, reason="no NPU regions: nothing was offloaded", passed=True),
                          gates=results)
    tools = None
    if target.npu.tosa_profile is not None:
        tools = run_toolchain(macs, ordered, [p["at_tokens"] for p in partitions], tokens, target)
        report["files"].update({"tosa": [p.tosa_file for p in tools.record.partitions],
                                "vela": [p.vela_file for p in tools.record.partitions if p.vela_file]})
    model = qdq_model(ordered, f"{target.name}_npu_regions")
    record = tools.record if tools is not None else None
    return NpuOffload(report, model, _cross_check(ordered, target, model, len(samples), tools), toolchain=record,
                      files=tools.files if tools is not None else None,
                      gates=npu_gate_results(gates, report, record, macs))
