"""Rule: fp32 matmul ``x[M, K] @ W[K, N]`` with ``W`` stored ``[K, N]`` (a prepacked linear weight).

dlight has no CPU matmul rule; its GEMV rule vectorizes along the strided axis of a transposed
weight. This rule schedules a 2-D matmul whose second operand is read ``[k, n]`` (``n``
contiguous, what ``slmc.schedules.prepack`` produces for linear weights) with the shared loop nest
of ``slmc.schedules.row_matmul``. It declines kernels with a dynamic or non-vector-multiple ``N``
(attention's batched score matmuls) and matmuls whose second operand is not read ``[k, n]``.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from slmc.schedules.row_matmul import CpuParams, matmul_block, schedule_row_matmul
from slmc.schedules.rule import SlmcCpuRule

ROW_BLOCK = 4  # rows accumulated at once (see schedule_row_matmul)


def _reads_k_by_n(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    """One operand is indexed exactly ``[m, k]`` and another exactly ``[k, n]`` (block iter vars)."""
    stmt = sch.get(block)
    m, n, k = (iv.var for iv in stmt.iter_vars)
    indexed = [[r.min for r in region.region] for region in stmt.reads]

    def same(index: list[tirx.Expr], want: list[tirx.Var]) -> bool:
        return len(index) == len(want) and all(isinstance(i, tirx.Var) and i.same_as(w) for i, w in zip(index, want))

    return any(same(i, [m, k]) for i in indexed) and any(same(i, [k, n]) for i in indexed)


class DenseMatmul(SlmcCpuRule):
    """Schedules float matmuls ``[M, K] x [K, N]`` (see the module docstring)."""

    def schedule(self, func: tirx.PrimFunc, target: Target, params: CpuParams) -> s_tir.Schedule | None:
        if self.kernel_kind(func) is not None:
            return None
        sch = s_tir.Schedule(func)
        block = matmul_block(sch)
        if block is None or not _reads_k_by_n(sch, block):
            return None
        return schedule_row_matmul(sch, block, params, row_block=ROW_BLOCK)
