"""The shared CPU schedule of slmc's matmul rules: ``out[m, n] = sum_k x[m, k] * w(k, n)``, ``w`` read ``[K, N]``.

``w(k, n)`` is any expression of ``k`` and ``n`` whose loads have ``n`` as their innermost index
(a prepacked fp32 weight ``W[k, n]``, or the dequantization of prepacked int4/int8 codes,
``slmc.schedules.prepack``): consecutive output channels are contiguous, so ``n`` is vectorized
and each vector of outputs accumulates in registers over the whole of ``k`` (no horizontal
reduction, no transpose). The loop nest, for ``M`` rows (dynamic: 1 in decode, the prompt length in
prefill) is::

    parallel  for no in N / nb:          # chunks of nb output channels, spread over the cores
              for mo in M / mb:          # weights of the chunk stay in L1/L2 across rows
                acc[0:mb, 0:nb] = 0      # vectorized, in registers (nb = 1..4 vectors)
                for ko in K / kt:
                  unrolled for kt:       # kt = 2 for int4: both nibbles of one byte
                    unrolled for mi in mb:   # row block (dense: 4), guarded for the last rows
                      vectorized for ni in nb:  acc[mi, ni] += x[m, k] * w(k, no * nb + ni)
                out[rows, no*nb : no*nb+nb] = epilogue(acc)   # bias / elementwise epilogue, vectorized

so every weight is read (and dequantized) where it is used: no float ``[N, K]`` buffer exists.
The same loop nest serves a GEMV (decode, ``M = 1``, memory-bound: the weights stream once) and a
GEMM (prefill). Reference for the layout choice: Goto & van de Geijn, "Anatomy of
High-Performance Matrix Multiplication", ACM TOMS 34(3), 2008 (packed panels, register blocking).
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm_ffi
from tvm import s_tir, tirx


# Scope of a CPU kernel's small per-chunk buffers (accumulators, per-group dots). TVM 0.27's LowerTVMBuiltin
# keeps an allocation on the stack (where LLVM can promote it to registers) only when its scope is "global"
# and its constant size is under kMaxStackAlloca (1 KB); a "local" one becomes a TVMBackendAllocWorkspace /
# FreeWorkspace pair of runtime calls at every entry of the loop it lives in: 2 per 64-channel chunk of an
# int4 decode GEMV, ~2,500 per step of a 4-layer SmolLM-shaped model (docs/dev-notes.md, session 10).
STACK_SCOPE = "global"


@dataclass(frozen=True)
class CpuParams:
    """What the rules read from the target descriptor: SIMD lanes of float32 and cores."""

    vector_bits: int
    cores: int

    @property
    def lanes(self) -> int:
        return max(1, self.vector_bits // 32)


def static_extent(sch: s_tir.Schedule, loop: s_tir.schedule.LoopRV) -> int | None:
    """The loop's extent if it is a constant, else ``None`` (a dynamic token axis)."""
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else None


def chunk_width(out_features: int, params: CpuParams) -> int | None:
    """Output channels per parallel chunk: the widest of 4, 2, 1 vectors that divides ``N`` and
    still gives every core at least two chunks (``None`` if no vector width divides ``N``)."""
    lanes = params.lanes
    fitting = [v * lanes for v in (4, 2, 1) if out_features % (v * lanes) == 0]
    if not fitting:
        return None
    balanced = [w for w in fitting if out_features // w >= 2 * params.cores]
    return balanced[0] if balanced else fitting[-1]


def root_blocks(sch: s_tir.Schedule) -> list[s_tir.schedule.SBlockRV]:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def is_reduction(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    return any(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(block).iter_vars)


def matmul_block(sch: s_tir.Schedule) -> s_tir.schedule.SBlockRV | None:
    """The one reduction block ``[M, N] <- sum over K`` of a 2-D matmul kernel, else ``None``."""
    reductions = [b for b in root_blocks(sch) if is_reduction(sch, b)]
    if len(reductions) != 1:
        return None
    block = reductions[0]
    kinds = [iv.iter_type for iv in sch.get(block).iter_vars]
    if kinds != [tirx.IterVar.DataPar, tirx.IterVar.DataPar, tirx.IterVar.CommReduce]:
        return None
    if len(sch.get_loops(block)) != 3:
        return None
    return block


def schedule_row_matmul(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, params: CpuParams,
                        k_unroll: int = 1, row_block: int = 1) -> s_tir.Schedule | None:
    """Apply the loop nest above to ``block`` (found by ``matmul_block``); ``None`` if ``N``/``K`` are
    not static or ``N`` is not a multiple of the vector width. ``k_unroll`` must divide ``K``.
    ``row_block`` > 1 accumulates that many rows at once (``mo``/``mi`` in place of ``m``, ``mi``
    unrolled inside ``kt``, guarded for the last rows): each weight vector loaded feeds
    ``row_block`` FMAs (measured on 576x1536 fp32, 128 rows, AVX-512: 27 -> 88 GFLOP/s with 4;
    no gain for dequantized weights, whose dequantization LLVM repeats in each guarded row).

    Other blocks: producers are inlined into the matmul (e.g. an input scale); consumers (bias,
    elementwise epilogues fused by FuseOps) are folded into the write-back of the accumulator, or
    else computed per chunk of ``nb`` channels after it. A primitive that fails raises
    ``ScheduleError`` (the calling rule declines the kernel).
    """
    m, n, k = sch.get_loops(block)
    out_features, in_features = static_extent(sch, n), static_extent(sch, k)
    if out_features is None or in_features is None or in_features % k_unroll:
        return None
    width = chunk_width(out_features, params)
    if width is None:
        return None
    others = [b for b in root_blocks(sch) if not sch.get(b).same_as(sch.get(block))]
    consumers = {str(sch.get(b).name_hint) for b in sch.get_consumers(block)}
    producers = [b for b in others if str(sch.get(b).name_hint) not in consumers]
    epilogues = [b for b in others if str(sch.get(b).name_hint) in consumers]
    if not all(_same_domain(sch, e, block) for e in epilogues):
        return None  # a consumer of another shape (a slice, a reduction): not an epilogue of the chunk loop
    for producer in producers:
        sch.compute_inline(producer)
    no, ni = sch.split(n, factors=[None, width])
    ko, kt = sch.split(k, factors=[None, k_unroll])
    mo, mi = sch.split(m, factors=[None, row_block])
    sch.reorder(no, mo, ko, kt, mi, ni)
    accumulator = sch.cache_write(block, 0, STACK_SCOPE)
    sch.reverse_compute_at(accumulator, mo)
    kept = fold_epilogues(sch, epilogues, mo)
    sch.unroll(kt)
    sch.unroll(mi)
    sch.vectorize(ni)  # before decompose_reduction: the update block alone is no longer a reduction block
    sch.parallel(no)
    init = sch.decompose_reduction(block, ko)
    vectorize_tails(sch, [init, accumulator, *kept])
    return sch


def _same_domain(sch: s_tir.Schedule, epilogue: s_tir.schedule.SBlockRV, block: s_tir.schedule.SBlockRV) -> bool:
    """``epilogue`` iterates over exactly the matmul's output domain (an elementwise consumer)."""
    def extents(b: s_tir.schedule.SBlockRV) -> list:
        return [iv.dom.extent for iv in sch.get(b).iter_vars if iv.iter_type == tirx.IterVar.DataPar]

    mine, theirs = extents(block), extents(epilogue)
    return len(mine) == len(theirs) and all(tvm_ffi.structural_equal(a, b) for a, b in zip(mine, theirs))


def fold_epilogues(sch: s_tir.Schedule, epilogues: list[s_tir.schedule.SBlockRV],
                   loop: s_tir.schedule.LoopRV) -> list[s_tir.schedule.SBlockRV]:
    """Fold elementwise epilogues into the write-back of the accumulator; those that do not fold
    run under ``loop`` instead and are returned."""
    kept = []
    for epilogue in epilogues:
        try:
            sch.reverse_compute_inline(epilogue)
        except s_tir.ScheduleError:
            sch.reverse_compute_at(epilogue, loop)
            kept.append(epilogue)
    return kept


def vectorize_tails(sch: s_tir.Schedule, blocks: list[s_tir.schedule.SBlockRV]) -> None:
    """Vectorize the innermost loop of each block (initializations, write-backs) unless it already is."""
    for tail in blocks:
        loop = sch.get_loops(tail)[-1]
        if sch.get(loop).kind != tirx.ForKind.VECTORIZED:
            sch.vectorize(loop)
