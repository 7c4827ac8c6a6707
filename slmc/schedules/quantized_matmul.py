"""Rule: slmc's quantized linear kernels (GEMV in decode, GEMM in prefill), dequantization fused.

Targets PrimFuncs marked ``slmc.kernel = "quantized_linear"`` (``slmc.quantization.tvm_kernels``),
whose codes, scales and zero points are prepacked ``[K', N]`` / ``[G, N]``. The shared loop nest
(``slmc.schedules.row_matmul``) vectorizes over output channels and dequantizes each weight inside
the reduction, in registers: for int4 the ``k`` loop is split by 2 and unrolled so that both nibbles
of one loaded byte vector are used before the next load. No float ``[N, K]`` buffer is created.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from slmc.schedules.row_matmul import CpuParams, matmul_block, schedule_row_matmul
from slmc.schedules.rule import SlmcCpuRule

KIND = "quantized_linear"


class QuantizedMatmul(SlmcCpuRule):
    """Schedules ``slmc.kernel = quantized_linear`` kernels (see the module docstring)."""

    def schedule(self, func: tirx.PrimFunc, target: Target, params: CpuParams) -> s_tir.Schedule | None:
        if self.kernel_kind(func) != KIND:
            return None
        sch = s_tir.Schedule(func)
        block = matmul_block(sch)
        if block is None:
            return None
        return schedule_row_matmul(sch, block, params, k_unroll=2 if _packs_nibbles(sch, block) else 1)


def _packs_nibbles(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    """Whether a ``uint8`` operand is read at ``k // 2`` (int4 codes, two per byte)."""
    stmt = sch.get(block)
    k = stmt.iter_vars[2].var
    for region in stmt.reads:
        index = region.region[0].min
        if (str(region.source.dtype) == "uint8" and isinstance(index, tirx.FloorDiv) and index.a.same_as(k)
                and isinstance(index.b, tirx.IntImm) and int(index.b) == 2):
            return True
    return False
