"""Rule: slmc's int8 x int8 linears (``w8a8_linear``) on tiled weights, through int8 dot products.

Targets PrimFuncs marked ``slmc.kernel = "w8a8_linear"`` whose weight is tiled
``[N/16, K/4, 16, 4]`` (``slmc.quantization.tvm_kernels.w8a8_linear_te``; the converter emits the
tiling as reshape/permute_dims, which ``slmc.schedules.prepack`` applies to the stored weight at
compile time). The matmul block computes ``dot[m, t, i] = sum_k x[m, k] * w[16t + i, k]`` over
tiles of 16 channels x 4 inputs. The loop nest, for ``M`` rows (dynamic: 1 in decode, the prompt
length in prefill; the kernel pads its activation codes with zero rows to a multiple of
``DOT_ROWS`` = 2, so no row is guarded), is::

    quantize activations to int8 codes x[M', K]           (M' = M rounded up to pairs; vectorized)
    parallel for to in T / nb:                            # chunks of nb tiles (16 channels each)
      for mo in M' / 2:
        acc[0:2, 0:nb, 0:16] = 0                          # in registers
        for ko in K / 4:
          unrolled for tn in nb:
            unrolled for mi in 2:                         # one weight tile load feeds both rows
              acc[mi, tn, :] += tile(w[to*nb + tn, ko], x[2mo + mi, 4ko : 4ko+4])
        out[rows < M, chunk] = epilogue(acc * scales)     # rescale, bias, fused elementwise ops

``tile`` is tensorized with the target's int8 dot-product instructions
(``slmc.schedules.int8_dot_intrinsics``: AVX-512 VNNI, AVX-VNNI, Arm dotprod), chosen from the
descriptor's ``compute.int8_dot`` list, never from the target's name (a listed feature that the
LLVM target does not enable is reported and not used: LLVM would abort); without one, the same
loop nest runs on int32 vectors (16 channels vectorized, the 4 inputs unrolled). ``nb`` keeps the
``2 x nb`` accumulators in half the vector registers. Kernels with an untiled ``[N, K]`` weight
(16 does not divide ``N`` or 4 does not divide ``K``) are declined and keep the generic schedules.
References: Intel, "Lower Numerical Precision Deep Learning Inference and Training" (2018: u8 x s8
VNNI GEMM with a compensation term); Goto & van de Geijn, ACM TOMS 34(3), 2008 (packed panels,
register blocking).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from slmc.quantization.tvm_kernels import DOT_ROWS
from slmc.schedules.int8_dot_intrinsics import TileChoice, tile_choice
from slmc.schedules.row_matmul import STACK_SCOPE, CpuParams, static_extent
from slmc.schedules.rule import SlmcCpuRule

KIND = "w8a8_linear"
_S, _R = tirx.IterVar.DataPar, tirx.IterVar.CommReduce


def _kinds(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> list[int]:
    return [int(iv.iter_type) for iv in sch.get(block).iter_vars]


def tiles_per_chunk(tiles: int, cores: int, most: int) -> int:
    """Tiles per parallel chunk: the most of 6, 4, 3, 2 (at most ``most``, the accumulators that fit in
    registers) that divides ``tiles`` and gives every core a chunk; else the most that divides
    ``tiles``. Measured (one Zen 5 core, 128 rows, 2 rows per tile load; a loaded machine, best of
    runs): 576x1536: 6 tiles 355, 4 tiles 380, 2 tiles 320 GMAC/s, 6 tiles one row at a time 150;
    576x192: 6 tiles 275, 3 tiles 160."""
    fitting = [c for c in (6, 4, 3, 2, 1) if c <= max(most, 1) and tiles % c == 0]
    balanced = [c for c in fitting if tiles // c >= cores]
    return (balanced or fitting)[0]


def consumers_in_order(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> list[s_tir.schedule.SBlockRV]:
    """The blocks that consume ``block``'s output, directly or through one another, in order."""
    found: list[s_tir.schedule.SBlockRV] = []
    frontier = list(sch.get_consumers(block))
    while frontier:
        current = frontier.pop(0)
        if not any(sch.get(current).same_as(sch.get(b)) for b in found):
            found.append(current)
            frontier.extend(sch.get_consumers(current))
    order = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]
    return sorted(found, key=lambda b: next(n for n, stmt in enumerate(order) if stmt.same_as(sch.get(b))))


class Int8DotRule(SlmcCpuRule):
    """A rule whose kernels run on the int8 dot-product tile (``Int8Matmul``, ``Int4Int8Matmul``).

    ``dot_features``: the descriptor's ``compute.int8_dot`` (e.g. ``["avx512_vnni", "avx_vnni"]``).
    """

    def __init__(self, params: CpuParams, dot_features: list[str] | tuple[str, ...] = (), notes: list[str] | None = None):
        super().__init__(params, notes)
        self.dot_features = list(dot_features)
        self.intrinsic: str | None = None

    def choose_tile(self, target: Target, params: CpuParams, nonnegative: bool = False) -> TileChoice:
        """The tile implementation for ``target`` (kept in ``intrinsic``; ``nonnegative``: the weight operand's
        codes are unsigned, so the tile needs no sign flip or offset); a listed feature the LLVM target lacks
        goes to the notes once."""
        choice = tile_choice(self.dot_features, target, params.vector_bits)
        if choice.missing and not any(choice.missing in note for note in self.notes):
            self.notes.append(f"{type(self).__name__}: the descriptor lists int8_dot {choice.missing} but the LLVM target "
                              f"(mcpu/mattr) lacks it; its kernels use {choice.feature or 'int32 vectors'}")
        self.intrinsic = choice.nonnegative_intrinsic if nonnegative else choice.intrinsic
        return choice


class Int8Matmul(Int8DotRule):
    """Schedules tiled ``slmc.kernel = w8a8_linear`` kernels (see the module docstring)."""

    def schedule(self, func: tirx.PrimFunc, target: Target, params: CpuParams) -> s_tir.Schedule | None:
        if self.kernel_kind(func) != KIND:
            return None
        sch = s_tir.Schedule(func)
        blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
        dots = [b for b in blocks if _kinds(sch, b) == [_S, _S, _S, _R, _R]]
        if len(dots) != 1:
            return None  # untiled weight: the generic rules take it
        dot = dots[0]
        loops = sch.get_loops(dot)
        if len(loops) != 5 or static_extent(sch, loops[1]) is None:
            return None
        codes = sch.get_producers(dot)
        if len(codes) != 1:
            return None
        choice = self.choose_tile(target, params)
        self._quantize(sch, codes[0])
        self._matmul(sch, dot, params, choice.vectors_per_row, choice.registers)
        return sch

    @staticmethod
    def _quantize(sch: s_tir.Schedule, codes: s_tir.schedule.SBlockRV) -> None:
        """Activation codes (rows padded to pairs), the input scale (SmoothQuant) inlined. Left to
        LLVM's loop vectorizer: TVM's vectorized form measured slower (576x192, 128 rows: 108 vs 71 us)."""
        for producer in sch.get_producers(codes):
            sch.compute_inline(producer)

    def _matmul(self, sch: s_tir.Schedule, dot: s_tir.schedule.SBlockRV, params: CpuParams, vectors_per_row: int,
                registers: int) -> None:
        m, t, i, ko, ki = sch.get_loops(dot)
        tiles = static_extent(sch, t)
        budget = registers // 2 // (DOT_ROWS * vectors_per_row)  # accumulators: half the vector registers
        to, tn = sch.split(t, factors=[None, tiles_per_chunk(tiles, params.cores, budget)])
        mo, mi = sch.split(m, factors=[None, DOT_ROWS])  # the codes' rows are padded to pairs: no guard
        sch.reorder(to, mo, ko, tn, mi, i, ki)
        epilogues = consumers_in_order(sch, dot)
        accumulator = sch.cache_write(dot, 0, STACK_SCOPE)
        sch.reverse_compute_at(accumulator, mo)
        for epilogue in epilogues:  # rescale (+ bias, + elementwise ops FuseOps fused): per row pair and chunk
            sch.reverse_compute_at(epilogue, mo)
            try:
                sch.vectorize(sch.get_loops(epilogue)[-1])
            except s_tir.ScheduleError:  # an epilogue whose inner loop is not a vector (LLVM may still vectorize it)
                pass
        sch.parallel(to)
        sch.unroll(tn)
        sch.unroll(mi)
        if self.intrinsic is None:  # int32 vectors: the 16 channels vectorized, the 4 inputs unrolled around them
            sch.reorder(ki, i)
            sch.vectorize(i)  # before decompose_reduction: the update block alone is no longer a reduction block
            sch.unroll(ki)
        init = sch.decompose_reduction(dot, ko)
        sch.vectorize(sch.get_loops(init)[-1])
        sch.vectorize(sch.get_loops(accumulator)[-1])
        if self.intrinsic is not None:
            sch.tensorize(i, self.intrinsic)
