"""The recipe's NPU build gates (``verify.gates``: ``min_npu_mac_fraction``, ``max_npu_cycles``,
``max_npu_latency_ms``, ``npu_sram_fit``) measured on the NPU partitions.

Where the target names a Vela configuration the figures are Vela's (``slmc.npu.vela``: partitions
Vela compiled count as on the NPU, refused ones do not); otherwise slmc's own estimates
(``slmc.npu.report``: every partition counts as on the NPU). The MAC fraction is over a token's
MACs (``slmc.npu.macs``): every linear-like op (float linears the recipe left unquantized stay on the
CPU) and the attention matmuls (activation x activation, always on the CPU) at the report's tokens. A gate that
fails names the partitions (or layers) responsible in its ``detail``; the compile then fails with
exit 1 (``slmc.artifact.manifest.Verification.failure_message``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slmc.artifact.manifest import GateResult
from slmc.artifact.npu_toolchain import NpuToolchain
from slmc.npu.macs import ModelMacs
from slmc.spec.recipe import Gates

SHOWN = 5


@dataclass
class PartitionFigures:
    """One partition's figures for the gates, from Vela or from slmc's estimate."""

    index: int
    layer: str
    on_npu: bool
    cycles: int
    seconds: float
    sram_bytes: int | None   # bytes used (Vela) or None when slmc's fit decides
    fits: bool


def partition_figures(report: dict[str, Any], toolchain: NpuToolchain | None) -> tuple[list[PartitionFigures], str]:
    """Each partition's figures and which tool produced them."""
    sram = None
    figures = []
    vela_records = {p.index: p for p in toolchain.partitions} if toolchain is not None and toolchain.vela else {}
    for p in report["partitions"]:
        estimate = p["at_tokens"]
        sram = estimate["sram_bytes"]
        tools = vela_records.get(p["index"])
        if vela_records:
            vela = tools.vela if tools is not None else None
            figures.append(PartitionFigures(p["index"], p["layer"], vela is not None, vela.cycles_total if vela else 0,
                                            vela.inference_time_s if vela else 0.0, vela.sram_used_bytes if vela else None,
                                            vela.sram_used_bytes <= sram if vela else False))
        else:
            figures.append(PartitionFigures(p["index"], p["layer"], True, estimate["cycles"]["estimate"],
                                            estimate["cycles"]["seconds"], None, bool(estimate["fits"])))
    return figures, f"Vela {toolchain.vela} ({toolchain.accelerator_config})" if vela_records else "slmc's estimate"


def _names(figures: list[PartitionFigures]) -> str:
    shown = ", ".join(f"{f.index} ({f.layer})" for f in figures[:SHOWN])
    return shown + (f" and {len(figures) - SHOWN} more" if len(figures) > SHOWN else "")


def npu_gate_results(gates: Gates, report: dict[str, Any], toolchain: NpuToolchain | None,
                     macs: ModelMacs) -> list[GateResult]:
    """One ``GateResult`` per NPU gate the recipe sets; ``macs``: the compiled graph's MACs per token."""
    figures, source = partition_figures(report, toolchain)
    results = []
    if gates.min_npu_mac_fraction is not None:
        fraction = macs.fraction(f.layer for f in figures if f.on_npu)
        partitioned = {f.layer for f in figures}
        off = [f for f in figures if not f.on_npu]
        cpu_layers = [name for name in macs.linear if name not in partitioned]
        detail = (f"{source}; partitions not on the NPU: {_names(off) or 'none'}; linear layers not partitioned "
                  f"(CPU): {', '.join(cpu_layers[:SHOWN]) or 'none'}" + (f" and {len(cpu_layers) - SHOWN} more"
                                                                        if len(cpu_layers) > SHOWN else "")
                  + f"; {macs.attention_summary()}")
        results.append(GateResult(gate="min_npu_mac_fraction", threshold=gates.min_npu_mac_fraction, measured=fraction,
                                  passed=fraction >= gates.min_npu_mac_fraction, detail=detail))
    heaviest = sorted((f for f in figures if f.on_npu), key=lambda f: f.cycles, reverse=True)
    if gates.max_npu_cycles is not None:
        cycles = sum(f.cycles for f in heaviest)
        results.append(GateResult(gate="max_npu_cycles", threshold=gates.max_npu_cycles, measured=cycles,
                                  passed=cycles <= gates.max_npu_cycles,
                                  detail=f"{source}; partitions with the most cycles: {_names(heaviest)}"))
    if gates.max_npu_latency_ms is not None:
        milliseconds = 1e3 * sum(f.seconds for f in heaviest)
        results.append(GateResult(gate="max_npu_latency_ms", threshold=gates.max_npu_latency_ms, measured=milliseconds,
                                  passed=milliseconds <= gates.max_npu_latency_ms,
                                  detail=f"{source}; partitions with the most cycles: {_names(heaviest)}"))
    if gates.npu_sram_fit:
        misfits = [f for f in figures if f.on_npu and not f.fits]
        results.append(GateResult(gate="npu_sram_fit", threshold=1.0, measured=float(not misfits), passed=not misfits,
                                  detail=f"{source}; partitions exceeding memory.sram_bytes: {_names(misfits) or 'none'}"))
    return results
