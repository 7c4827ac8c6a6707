"""Rule: slmc's int4 x int8 linears (``w4a8_linear``) on the target's int8 dot products, group by group.

Targets PrimFuncs marked ``slmc.kernel = "w4a8_linear"`` with tiled weights (the stages of
``slmc.quantization.w4a8_kernel``: nibble-paired bytes ``[N/16, K/8, 16, 4]``, two int8 tiles ``[16, 4]``
per 64-byte block, the first in the low nibbles; an ``unpacked_codes`` stage of unsigned int8 tiles).
For ``M`` rows (the activation codes are padded to a multiple of ``DOT_ROWS`` = 2, so no row is guarded)
two loop nests, joined by ``slmc.schedules.row_branch`` on the row count when it is dynamic::

    r[m, a] = max|x[m, group a]|; codes x[M', K] = round(x * 127 / r)  # per token (a = 0) or per activation group
    o[m, g] = -8 * sum(x[m, group g])                         # the codes c stand for c - 8
    decode (M = 1): weights read once, unpacked in registers
    parallel for to in T / nb:                                # chunks of nb tiles (16 channels each)
      acc[0:2, 0:nb*16] = 0.0
      for g in groups:
        dot[0:2, 0:nb, 0:16] = 0                              # int32, in registers
        for b in group_size / 8:                              # 64-byte blocks: two tiles each
          for tn in nb:
            w0, w1 = packed[to*nb + tn, g*gs/8 + b] & 15, (... >> 4) & 15   # one shift and mask per tile
            unrolled for h in 2, mi in 2:                     # one unpacked tile feeds both rows
              dot[mi, tn, :] += tile(w_h, x[mi, g*gs + 8b + 4h : +4])
        acc[mi, n] += float(dot[mi, n] + o[mi, g]) * scale[g, n] * r[mi, a(g)] / 127
      out[rows < M, chunk] = acc (+ bias, fused elementwise ops)
    prefill (M > 1): each group's tiles unpacked once for all rows of a chunk
    parallel for to in T / nb:
      acc[0:M', 0:nb*16] = 0.0                                # float32, L1/L2-resident
      for g in groups:
        u[0:nb, 0:gs/4] = unpack(packed[chunk, group g])      # nb * gs * 16 bytes of int8 tiles
        for mo in M' / 2:
          dot[0:2, 0:nb, 0:16] = 0                            # int32, in registers
          for kb in group_size / 4, tn in nb, mi in 2:
            dot[mi, tn, :] += tile(u[tn, kb], x[2mo + mi, g*gs + 4kb : +4])
          acc[2mo + mi, n] += float(dot[mi, n] + o[2mo + mi, g]) * scale[g, n] * r[2mo + mi, a(g)] / 127
      out[rows < M, chunk] = acc (+ bias, fused elementwise ops)

``tile`` is the int8 tile of ``slmc.schedules.int8_dot_intrinsics`` for weights in ``[0, 127]``
(``NONNEGATIVE_INTRINSICS``: AVX-512 VNNI / AVX-VNNI ``vpdpbusd`` with the codes as its unsigned operand,
no sign flip; Arm ``sdot``), chosen from the descriptor's ``compute.int8_dot`` as ``Int8Matmul``'s
(never the target's name); without one, int32 vectors. The weight stays packed (4 bits) in memory.
Measured (one 576->1536 linear, docs/dev-notes.md "w4a8 kernel speed"): prefill with the per-row-pair
unpacking of the decode nest was 1.15x w8a8's time, with the per-chunk unpacking below it. References:
llama.cpp's ``ggml_vec_dot_q4_0_q8_0`` (int4 x int8 blocks, nibbles paired ``x[j]``, ``x[j + 16]``, one
float scale per block product); Intel, "Lower Numerical Precision Deep Learning Inference and Training"
(2018).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from slmc.quantization.tvm_kernels import DOT_ROWS
from slmc.schedules.int8_matmul import Int8DotRule, consumers_in_order, tiles_per_chunk
from slmc.schedules.row_branch import branch_on_rows
from slmc.schedules.row_matmul import STACK_SCOPE, CpuParams, static_extent

KIND = "w4a8_linear"
_STAGES = ("token_absmax_lanes", "quantize_activations", "code_offset", "unpacked_codes", "int8_group_dot", "group_rescale")


def _stages(sch: s_tir.Schedule) -> dict[str, s_tir.schedule.SBlockRV]:
    return {sch.get(b).name_hint: b for b in sch.get_child_blocks(sch.get_sblock("root"))}


class Int4Int8Matmul(Int8DotRule):
    """Schedules tiled ``slmc.kernel = w4a8_linear`` kernels (see the module docstring); untiled ones
    (no ``unpacked_codes`` stage) are declined and keep the generic schedules."""

    def schedule(self, func: tirx.PrimFunc, target: Target, params: CpuParams) -> s_tir.Schedule | None:
        if self.kernel_kind(func) != KIND:
            return None
        sch = s_tir.Schedule(func)
        named = _stages(sch)
        if any(stage not in named for stage in _STAGES):
            return None
        if static_extent(sch, sch.get_loops(named["group_rescale"])[1]) is None:
            return None
        choice = self.choose_tile(target, params, nonnegative=True)  # the codes are unsigned (below 16)
        budget = max(choice.registers // 2 // (DOT_ROWS * choice.vectors_per_row), 1)  # int32 accumulators
        rows = func.params[0].shape[0]  # x [M, K] (a buffer parameter)
        if isinstance(rows, tirx.IntImm):
            if int(rows) == 1:
                self._decode(sch, params, max(budget // 2, 1))
            else:
                self._prefill(sch, params, budget)
            return sch
        decode, prefill = s_tir.Schedule(func), s_tir.Schedule(func)
        self._decode(decode, params, max(budget // 2, 1))  # float32 accumulators in registers too
        self._prefill(prefill, params, budget)
        return s_tir.Schedule(branch_on_rows(decode.mod["main"], prefill.mod["main"], rows))

    @staticmethod
    def _chunks(sch: s_tir.Schedule, params: CpuParams, most_tiles: int) -> tuple:
        """Splits the rescale's loops into chunks of tiles (``to, tn, i``) and row pairs (``mo, mi``)."""
        named = _stages(sch)
        m, n, g = sch.get_loops(named["group_rescale"])
        width = int(sch.get(named["int8_group_dot"]).iter_vars[3].dom.extent)
        chunk = tiles_per_chunk(static_extent(sch, n) // width, params.cores, most_tiles)
        to, tn, i = sch.split(n, factors=[None, chunk, width])
        mo, mi = sch.split(m, factors=[None, DOT_ROWS])  # the codes' rows are padded to pairs: no guard
        return to, tn, i, mo, mi, g

    @staticmethod
    def _epilogues_at(sch: s_tir.Schedule, loop: s_tir.schedule.LoopRV) -> None:
        """The row scale (+ bias, + elementwise ops FuseOps fused) under ``loop``, vectorized."""
        rescale = _stages(sch)["group_rescale"]
        epilogues = consumers_in_order(sch, rescale)
        sch.set_scope(rescale, 0, STACK_SCOPE)
        for epilogue in epilogues:
            sch.reverse_compute_at(epilogue, loop)
            try:
                sch.vectorize(sch.get_loops(epilogue)[-1])
            except s_tir.ScheduleError:  # an epilogue whose inner loop is not a vector (LLVM may still vectorize it)
                pass

    def _decode(self, sch: s_tir.Schedule, params: CpuParams, most_tiles: int) -> None:
        """One row pair: each 64-byte block unpacked into registers where its two tiles are used."""
        to, tn, i, mo, mi, g = self._chunks(sch, params, most_tiles)
        sch.reorder(to, mo, g, tn, mi, i)
        self._epilogues_at(sch, mo)
        named = _stages(sch)
        dot, unpacked = named["int8_group_dot"], named["unpacked_codes"]
        sch.compute_at(dot, g, preserve_unit_loops=True)
        dm, dt, di, dkb, dki = self._dot_loops(sch, dot)
        block, half = sch.split(dkb, factors=[None, 2])  # the two tiles of one 64-byte block: low, high nibbles
        sch.reorder(block, dt, half, dm, di, dki)
        sch.compute_at(unpacked, dt, preserve_unit_loops=True)  # both tiles of a block (128 bytes, in registers)
        self._unpack_vectors(sch, unpacked)
        sch.unroll(half)
        self._finish(sch, to, g, i, dt, dm, di, dki, block)
        self._token_stages(sch)

    def _prefill(self, sch: s_tir.Schedule, params: CpuParams, most_tiles: int) -> None:
        """Row pairs inside groups: a group's tiles of the chunk unpacked once, read by every row pair."""
        to, tn, i, mo, mi, g = self._chunks(sch, params, most_tiles)
        sch.reorder(to, g, mo, tn, mi, i)
        self._epilogues_at(sch, to)  # the float32 sums [M', chunk] stay in L1/L2 across the groups
        named = _stages(sch)
        dot, unpacked = named["int8_group_dot"], named["unpacked_codes"]
        sch.compute_at(dot, mo, preserve_unit_loops=True)
        dm, dt, di, dkb, dki = self._dot_loops(sch, dot)
        sch.reorder(dkb, dt, dm, di, dki)
        sch.compute_at(unpacked, g, preserve_unit_loops=True)  # nb x group_size x 16 bytes of int8 tiles
        self._unpack_vectors(sch, unpacked)
        self._finish(sch, to, g, i, dt, dm, di, dki, dkb)
        self._token_stages(sch)

    @staticmethod
    def _token_stages(sch: s_tir.Schedule) -> None:
        """The row range's lanes (``token_absmax_lanes``) with the lanes innermost: 16 independent maxes per 16
        inputs, which LLVM's loop vectorizer makes one vector max (TVM refuses to vectorize a loop under a
        reduction loop). Not parallel: the per-token stages on every core were slower in a smoke on a loaded
        machine (three more fork-joins per call; docs/dev-notes.md "w4a8 per-token stages")."""
        lanes = _stages(sch)["token_absmax_lanes"]
        *_, lane, r = sch.get_loops(lanes)  # rows, activation groups (one per token), lanes, inputs
        sch.decompose_reduction(lanes, lane)
        sch.reorder(r, lane)

    @staticmethod
    def _dot_loops(sch: s_tir.Schedule, dot: s_tir.schedule.SBlockRV) -> tuple:
        sch.set_scope(dot, 0, STACK_SCOPE)
        dm, _, dt, di, dkb, dki = sch.get_loops(dot)[-6:]
        return dm, dt, di, dkb, dki

    @staticmethod
    def _unpack_vectors(sch: s_tir.Schedule, unpacked: s_tir.schedule.SBlockRV) -> None:
        """Each tile's 64 bytes (16 channels x 4 inputs) one vector: one shift and one mask (``vpsrlw`` + ``vpand``,
        or ``vgf2p8affineqb`` + ``vpand``); a block's two tiles unrolled, so that they share its load."""
        *_, kb, channel, inner = sch.get_loops(unpacked)
        block, half = sch.split(kb, factors=[None, 2])
        sch.unroll(half)
        sch.vectorize(sch.fuse(channel, inner))

    def _finish(self, sch: s_tir.Schedule, to, g, i, dt, dm, di, dki, reduction) -> None:  # noqa: ANN001 - LoopRVs
        sch.parallel(to)
        sch.unroll(dt)
        sch.unroll(dm)
        sch.vectorize(i)
        if self.intrinsic is None:  # int32 vectors: the 16 channels vectorized, the 4 inputs unrolled around them
            sch.reorder(dki, di)
            sch.vectorize(di)
            sch.unroll(dki)
        sch.decompose_reduction(_stages(sch)["group_rescale"], g)
        init = sch.decompose_reduction(_stages(sch)["int8_group_dot"], reduction)
        sch.vectorize(sch.get_loops(init)[-1])
        if self.intrinsic is not None:
            sch.tensorize(di, self.intrinsic)
