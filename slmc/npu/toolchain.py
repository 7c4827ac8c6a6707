"""The NPU partitions through Arm's tools: TOSA lowering, the TOSA reference model, Vela.

For a descriptor with ``npu.tosa_profile``: every partition is lowered to TOSA
(``tosa_lowering``) at the report's token count, its flatbuffer is executed by the TOSA reference
model on the int8 codes the partition received (``tosa_reference``: the comparison with slmc's
integer kernels is ``verification.npu.tosa_reference``), and with ``npu.vela`` it is compiled by
Vela (``vela``), whose summary sits beside slmc's own estimate in the manifest's ``npu_toolchain``;
a refusal carries Vela's documented constraints for the refused operator (``vela_constraints``).
The files (flatbuffers, command streams) stay on disk in a work directory until the artifact is staged.

Preconditions: ``layers`` are the partitions' layers in partition order and ``estimates`` their
``at_tokens`` cost records (``slmc.npu.report.partition_cost``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slmc.artifact.npu_toolchain import NpuPartitionTools, NpuToolchain, NpuToolchainTotals, VelaRefusal, VelaSummary
from slmc.npu.layers import NpuLayer
from slmc.npu.macs import ModelMacs
from slmc.npu.tosa_lowering import TOSA_VERSION, TosaPartition, lower_partition, tosa_tools_version
from slmc.npu.tosa_reference import run_partition
from slmc.npu.vela import VelaResult, compile_tosa, vela_version
from slmc.npu.vela_constraints import refusal_record
from slmc.spec.target import TargetDescriptor

TOSA_DIR = "npu_tosa"
VELA_DIR = "npu_vela"


@dataclass
class ToolchainFiles:
    """The toolchain's files for the artifact (TOSA flatbuffers, Vela command streams, each carrying a layer's
    int8 weights), kept on disk in a work directory from the moment a tool writes them until the artifact is
    staged, not in memory. The work directory is removed with this object."""

    work: tempfile.TemporaryDirectory = field(default_factory=lambda: tempfile.TemporaryDirectory(prefix="slmc-npu-"))
    paths: dict[str, Path] = field(default_factory=dict)  # artifact-relative path -> the file in ``work``

    @property
    def root(self) -> Path:
        return Path(self.work.name)

    def __contains__(self, relative: object) -> bool:
        return relative in self.paths

    def write(self, directory: Path) -> None:
        """Copy the files under the artifact ``directory`` (file to file, never whole into memory)."""
        for relative, source in self.paths.items():
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


@dataclass
class ToolchainRun:
    """The manifest record, the reference model's outputs per partition, and the files for the artifact."""

    record: NpuToolchain
    reference_outputs: list[np.ndarray]
    files: ToolchainFiles


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


def _totals(records: list[NpuPartitionTools], macs: ModelMacs) -> NpuToolchainTotals:
    compiled = [r for r in records if r.vela is not None]
    vela_cycles = sum(r.vela.cycles_total for r in compiled)
    slmc_cycles = sum(r.slmc_estimated_cycles for r in compiled)
    return NpuToolchainTotals(
        vela_cycles=vela_cycles, vela_inference_time_s=sum(r.vela.inference_time_s for r in compiled),
        slmc_estimated_cycles=slmc_cycles, vela_to_slmc_cycles=_ratio(vela_cycles, slmc_cycles),
        max_sram_used_bytes=max((r.vela.sram_used_bytes for r in compiled), default=0),
        npu_macs=macs.on(r.layer for r in compiled), model_macs=macs.total,
        attention_macs=sum(macs.attention.values()), attention_context_tokens=macs.context,
        npu_mac_fraction=macs.fraction(r.layer for r in compiled))


def run_toolchain(macs: ModelMacs, layers: Sequence[NpuLayer], estimates: Sequence[dict[str, Any]], rows: int,
                  target: TargetDescriptor) -> ToolchainRun:
    """Lower, execute (reference model) and, for an Ethos-U descriptor, compile (Vela) every partition, one
    partition at a time (its flatbuffer is written to the work directory and dropped before the next).
    ``macs``: the compiled graph's MACs per token (``slmc.npu.macs.model_macs_per_token``)."""
    npu, vela = target.npu, target.npu.vela
    files = ToolchainFiles()
    (files.root / TOSA_DIR).mkdir()
    reference, records, refusals = [], [], []
    for index, (layer, estimate) in enumerate(zip(layers, estimates)):
        partition = lower_partition(index, layer, rows, npu.rounding, npu.tosa_profile)
        source = files.root / TOSA_DIR / partition.file_name
        source.write_bytes(partition.flatbuffer)
        files.paths[f"{TOSA_DIR}/{partition.file_name}"] = source
        reference.append(run_partition(partition, layer.codes))
        result = compile_tosa(source, vela, files.root / f"vela_{index}") if vela is not None else None
        if result is not None and result.compiled and result.command_stream is not None:
            files.paths[f"{VELA_DIR}/{result.command_stream.name}"] = result.command_stream
        if result is not None and not result.compiled:
            refusals.append(VelaRefusal.model_validate(refusal_record(
                partition.index, partition.layer, partition.operators, result, vela.accelerator_config)))
        records.append(_partition_record(partition, estimate, result))
    record = NpuToolchain(
        tosa_tools=tosa_tools_version(), tosa_profile=npu.tosa_profile, tosa_version=".".join(map(str, TOSA_VERSION)),
        vela=vela_version() if vela is not None else None,
        accelerator_config=vela.accelerator_config if vela is not None else None,
        system_config=vela.system_config if vela is not None else None,
        memory_mode=vela.memory_mode if vela is not None else None,
        partitions=records, refusals=refusals, totals=_totals(records, macs) if vela is not None else None)
    return ToolchainRun(record=record, reference_outputs=reference, files=files)
