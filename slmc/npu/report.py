"""Per-partition cost from the descriptor: MACs, on-chip memory fit or tiling, estimated cycles.

For a region (one int8 linear, ``K`` inputs, ``N`` outputs) over ``T`` tokens:

- MACs = ``T * K * N``;
- on-chip bytes: weights ``N*K`` (int8) + ``12*N`` (int32 bias, multiplier, shift) and activations
  ``T*(K+N)`` (int8 input and output); it fits when their sum is at most ``memory.sram_bytes``, else
  weights are streamed in output-channel tiles: ``ceil(weight_bytes / (sram - activation_bytes))``
  tiles (when the activations alone exceed SRAM, the tokens must be split too: reported, not tiled);
- cycles: compute-bound ``ceil(MACs / npu.macs_per_cycle)``; memory-bound ``bytes / (bandwidth /
  clock)`` with every weight and activation byte moved once between DRAM and the NPU; the estimate is
  the larger (a roofline, Williams et al., 2009), and the report says which bound it is. These are
  estimates from published peak figures, not measurements.
"""

from __future__ import annotations

import math
from typing import Any

from slmc.npu.layers import NpuLayer
from slmc.spec.target import TargetDescriptor

PARAMETER_BYTES_PER_CHANNEL = 12  # int32 bias, int32 multiplier, int32 shift


def partition_cost(layer: NpuLayer, tokens: int, target: TargetDescriptor) -> dict[str, Any]:
    """The cost record of one region at ``tokens`` tokens (rows)."""
    npu, memory = target.npu, target.memory
    k, n = layer.in_features, layer.out_features
    macs = tokens * k * n
    weight_bytes = n * k + PARAMETER_BYTES_PER_CHANNEL * n
    activation_bytes = tokens * (k + n)
    sram = int(memory.sram_bytes)
    fits = weight_bytes + activation_bytes <= sram
    if fits:
        tiling: dict[str, Any] = {"fits": True, "weight_tiles": 1}
    elif activation_bytes < sram:
        tiling = {"fits": False, "weight_tiles": math.ceil(weight_bytes / (sram - activation_bytes))}
    else:
        tiling = {"fits": False, "weight_tiles": None,
                  "note": f"activations alone ({activation_bytes} B) exceed SRAM ({sram} B): tokens must be split"}
    compute_cycles = math.ceil(macs / npu.macs_per_cycle)
    cycles: dict[str, Any] = {"compute_bound": compute_cycles}
    if memory.bandwidth_gbps is not None:
        bytes_per_cycle = memory.bandwidth_gbps * 1e9 / npu.clock_hz
        memory_cycles = math.ceil((weight_bytes + activation_bytes) / bytes_per_cycle)
        cycles["memory_bound"] = memory_cycles
        cycles["estimate"] = max(compute_cycles, memory_cycles)
        cycles["bound"] = "memory" if memory_cycles > compute_cycles else "compute"
    else:
        cycles["estimate"], cycles["bound"] = compute_cycles, "compute (memory.bandwidth_gbps not given)"
    cycles["seconds"] = cycles["estimate"] / npu.clock_hz
    return {"tokens": tokens, "macs": macs, "weight_bytes": weight_bytes, "activation_bytes": activation_bytes,
            "sram_bytes": sram, **tiling, "cycles": cycles}
