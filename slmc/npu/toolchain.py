"""The NPU partitions through Arm's tools: TOSA lowering, the TOSA reference model, Vela.

For a descriptor with ``npu.tosa_profile``: every partition is lowered to TOSA
(``tosa_lowering``) at the report's token count, its flatbuffer is executed by the TOSA reference
model on the int8 codes the partition received (``tosa_reference``: the comparison with slmc's
integer kernels is ``verification.npu.tosa_reference``), and with ``npu.vela`` it is compiled by
Vela (``vela``), whose summary sits beside slmc's own estimate in the manifest's ``npu_toolchain``.

Preconditions: ``layers`` are the partitions' layers in partition order and ``estimates`` their
``at_tokens`` cost records (``slmc.npu.report.partition_cost``); ``graph`` is the compiled graph.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slmc.artifact.npu_toolchain import NpuPartitionTools, NpuToolchain, NpuToolchainTotals, VelaRefusal, VelaSummary
from slmc.graph.ir import Graph, fetch_attr, op_name
from slmc.npu.layers import NpuLayer
from slmc.npu.tosa_lowering import TOSA_VERSION, TosaPartition, lower_partition, tosa_tools_version
from slmc.npu.tosa_reference import run_partition
from slmc.npu.vela import VelaResult, compile_tosa, vela_version
from slmc.spec.target import TargetDescriptor

TOSA_DIR = "npu_tosa"
VELA_DIR = "npu_vela"
# MACs one token costs in a linear-like op, from its stored weight [N, ...] (the op's second argument):
# float and w8a8 weights are [N, K]; int4 codes pack 8 / bits (quantized_linear's bits argument) or 2 (w4a8) per byte
LINEAR_MACS = {
    "linear": lambda weight, node: weight.shape[0] * weight.shape[1],
    "w8a8_linear": lambda weight, node: weight.shape[0] * weight.shape[1],
    "quantized_linear": lambda weight, node: weight.shape[0] * weight.shape[1] * 8 // node.args[6],
    "w4a8_linear": lambda weight, node: weight.shape[0] * weight.shape[1] * 2,
}


@dataclass
class ToolchainRun:
    """The manifest record, the reference model's outputs per partition, and the files for the artifact."""

    record: NpuToolchain
    reference_outputs: list[np.ndarray]
    files: dict[str, bytes] = field(default_factory=dict)  # artifact-relative path -> content


def linear_macs_per_token(graph: Graph) -> dict[str, int]:
    """``K * N`` of every linear-like node of ``graph`` (float, w8a8, int4, w4a8), by node name: the MACs it
    does per token."""
    return {node.name: int(LINEAR_MACS[op_name(node)](fetch_attr(graph.module, str(node.args[1].target)), node))
            for node in graph.op_nodes() if op_name(node) in LINEAR_MACS}


def _ratio(vela: float, slmc: float) -> float | None:
    return vela / slmc if slmc else None


def _partition_record(partition: TosaPartition, estimate: dict[str, Any], result: VelaResult | None) -> NpuPartitionTools:
    slmc_cycles = int(estimate["cycles"]["estimate"])
    vela = VelaSummary.model_validate(result.summary_record()) if result is not None and result.compiled else None
    return NpuPartitionTools(
        index=partition.index, layer=partition.layer, rows=partition.rows, tosa_file=f"{TOSA_DIR}/{partition.file_name}",
        tosa_operators=partition.operators,
        vela_file=f"{VELA_DIR}/{result.command_stream.name}" if vela is not None and result.command_stream else None,
        vela=vela, slmc_estimated_cycles=slmc_cycles,
        vela_to_slmc_cycles=_ratio(vela.cycles_total, slmc_cycles) if vela is not None else None)


def run_toolchain(graph: Graph, layers: Sequence[NpuLayer], estimates: Sequence[dict[str, Any]], rows: int,
                  target: TargetDescriptor) -> ToolchainRun:
    """Lower, execute (reference model) and, for an Ethos-U descriptor, compile (Vela) every partition."""
    npu = target.npu
    partitions = [lower_partition(i, layer, rows, npu.rounding, npu.tosa_profile) for i, layer in enumerate(layers)]
    reference = [run_partition(p, layer.codes) for p, layer in zip(partitions, layers)]
    files = {f"{TOSA_DIR}/{p.file_name}": p.flatbuffer for p in partitions}
    results: list[VelaResult | None] = [None] * len(partitions)
    if npu.vela is not None:
        with tempfile.TemporaryDirectory(prefix="slmc-vela-") as work:
            for p in partitions:
                source = Path(work) / p.file_name
                source.write_bytes(p.flatbuffer)
                results[p.index] = result = compile_tosa(source, npu.vela, Path(work) / f"out_{p.index}")
                if result.compiled and result.command_stream is not None:
                    files[f"{VELA_DIR}/{result.command_stream.name}"] = result.command_stream.read_bytes()
    records = [_partition_record(p, e, r) for p, e, r in zip(partitions, estimates, results)]
    refusals = [VelaRefusal(partition=p.index, layer=p.layer, tosa_operators=p.operators, operator=r.refused_operator,
                            reason=r.reason or "") for p, r in zip(partitions, results) if r is not None and not r.compiled]
    totals = None
    if npu.vela is not None:
        per_token = linear_macs_per_token(graph)
        compiled = [r for r in records if r.vela is not None]
        vela_cycles = sum(r.vela.cycles_total for r in compiled)
        slmc_cycles = sum(r.slmc_estimated_cycles for r in compiled)
        npu_macs = sum(per_token.get(r.layer, 0) for r in compiled)
        model_macs = sum(per_token.values())
        totals = NpuToolchainTotals(
            vela_cycles=vela_cycles, vela_inference_time_s=sum(r.vela.inference_time_s for r in compiled),
            slmc_estimated_cycles=slmc_cycles, vela_to_slmc_cycles=_ratio(vela_cycles, slmc_cycles),
            max_sram_used_bytes=max((r.vela.sram_used_bytes for r in compiled), default=0),
            npu_macs=npu_macs, model_macs=model_macs, npu_mac_fraction=npu_macs / model_macs if model_macs else 0.0)
    vela = npu.vela
    record = NpuToolchain(
        tosa_tools=tosa_tools_version(), tosa_profile=npu.tosa_profile, tosa_version=".".join(map(str, TOSA_VERSION)),
        vela=vela_version() if vela is not None else None,
        accelerator_config=vela.accelerator_config if vela is not None else None,
        system_config=vela.system_config if vela is not None else None,
        memory_mode=vela.memory_mode if vela is not None else None,
        partitions=records, refusals=refusals, totals=totals)
    return ToolchainRun(record=record, reference_outputs=reference, files=files)


def write_files(files: dict[str, bytes], directory: Path) -> None:
    """Write the toolchain's files (TOSA flatbuffers, Vela outputs) under the artifact ``directory``."""
    for relative, content in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)

