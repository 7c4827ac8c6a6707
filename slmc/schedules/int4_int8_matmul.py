"""Rule: slmc's int4 x int8 linears (``w4a8_linear``) on the target's int8 dot products, group by group.

Targets PrimFuncs marked ``slmc.kernel = "w4a8_linear"`` with tiled weights (the stages of
``slmc.quantization.w4a8_kernel``: packed bytes ``[N/16, K/4, 16, 2]``, an ``unpacked_codes`` stage of
int8 tiles ``[16, 4]``). The loop nest, for ``M`` rows (1 in decode, the prompt length in prefill;
the activation codes are padded to a multiple of ``DOT_ROWS`` = 2, so no row is guarded), is::

    r[m] = max|x[m, :]|; codes x[M', K] = round(x * 127 / r)   # per token (dynamic)
    parallel for to in T / nb:                                # chunks of nb tiles (16 channels each)
      for mo in M' / 2:
        acc[0:2, 0:nb*16] = 0.0                               # float32, in registers
        for g in groups:
          dot[0:2, 0:nb, 0:16] = 0                            # int32, in registers
          for kb in group_size / 4:
            for tn in nb:
              w = unpack(packed[to*nb + tn, g*gs/4 + kb])     # 32 bytes -> one int8 tile [16, 4]
              unrolled for mi in 2:                           # one unpacked tile feeds both rows
                dot[mi, tn, :] += tile(w, x[2mo + mi, g*gs + 4kb : +4])
          acc[mi, n] += float(dot[mi, n]) * scale[g, n]       # each group's int32 sum scaled, vectorized
        out[rows < M, chunk] = acc * r / 127 (+ bias, fused elementwise ops)

``tile`` is the int8 tile of ``slmc.schedules.int8_dot_intrinsics`` (AVX-512 VNNI / AVX-VNNI
``vpdpbusd``, Arm ``sdot``), shared with ``Int8Matmul`` and chosen the same way from the descriptor's
``compute.int8_dot`` (never the target's name); without one, int32 vectors. The weight stays packed
(4 bits) in memory and is unpacked one tile at a time into registers. References: llama.cpp's
``ggml_vec_dot_q4_0_q8_0`` (int4 x int8 blocks, one float scale per block product); Intel, "Lower
Numerical Precision Deep Learning Inference and Training" (2018).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.target import Target

from slmc.quantization.tvm_kernels import DOT_ROWS
from slmc.schedules.int8_matmul import Int8DotRule, consumers_in_order, tiles_per_chunk
from slmc.schedules.row_matmul import CpuParams, static_extent

KIND = "w4a8_linear"
_STAGES = ("quantize_activations", "code_offset", "unpacked_codes", "int8_group_dot", "group_rescale")


class Int4Int8Matmul(Int8DotRule):
    """Schedules tiled ``slmc.kernel = w4a8_linear`` kernels (see the module docstring); untiled ones
    (no ``unpacked_codes`` stage) are declined and keep the generic schedules."""

    def schedule(self, func: tirx.PrimFunc, target: Target, params: CpuParams) -> s_tir.Schedule | None:
        if self.kernel_kind(func) != KIND:
            return None
        sch = s_tir.Schedule(func)
        named = {sch.get(b).name_hint: b for b in sch.get_child_blocks(sch.get_sblock("root"))}
        if any(stage not in named for stage in _STAGES):
            return None
        if static_extent(sch, sch.get_loops(named["group_rescale"])[1]) is None:
            return None
        choice = self.choose_tile(target, params)
        self.intrinsic = choice.nonnegative_intrinsic  # the codes are unsigned (below 16): no sign flip, no offset
        budget = choice.registers // 2 // (DOT_ROWS * choice.vectors_per_row)  # int32 + float accumulators
        self._schedule(sch, named, params, max(budget // 2, 1))
        return sch

    def _schedule(self, sch: s_tir.Schedule, named: dict, params: CpuParams, most_tiles: int) -> None:
        dot, rescale, unpacked = named["int8_group_dot"], named["group_rescale"], named["unpacked_codes"]
        m, n, g = sch.get_loops(rescale)
        extent = static_extent(sch, n)
        width = int(sch.get(dot).iter_vars[3].dom.extent)
        chunk = tiles_per_chunk(extent // width, params.cores, most_tiles)
        to, tn, i = sch.split(n, factors=[None, chunk, width])
        mo, mi = sch.split(m, factors=[None, DOT_ROWS])  # the codes' rows are padded to pairs: no guard
        sch.reorder(to, mo, g, tn, mi, i)
        epilogues = consumers_in_order(sch, rescale)
        sch.set_scope(rescale, 0, "local")
        for epilogue in epilogues:  # row scale (+ bias, + elementwise ops FuseOps fused): per row pair and chunk
            sch.reverse_compute_at(epilogue, mo)
            try:
                sch.vectorize(sch.get_loops(epilogue)[-1])
            except s_tir.ScheduleError:  # an epilogue whose inner loop is not a vector (LLVM may still vectorize it)
                pass
        sch.compute_at(dot, g, preserve_unit_loops=True)
        sch.set_scope(dot, 0, "local")
        dm, _, dt, di, dkb, dki = sch.get_loops(dot)[-6:]
        block, half = sch.split(dkb, factors=[None, 2])  # the two tiles of one 64-byte block: low, high nibbles
        sch.reorder(block, dt, half, dm, di, dki)
        sch.compute_at(unpacked, dt, preserve_unit_loops=True)  # both tiles of a block (128 bytes, in registers); global scope, as the tile intrinsic's operand
        nibble, lanes = self._unpack_loops(sch, unpacked)
        sch.parallel(to)
        sch.unroll(dt)
        sch.unroll(half)
        sch.unroll(dm)
        sch.unroll(nibble)
        sch.vectorize(lanes)  # 64 contiguous bytes: one shift and one mask per tile
        sch.vectorize(i)
        if self.intrinsic is None:  # int32 vectors: the 16 channels vectorized, the 4 inputs unrolled around them
            sch.reorder(dki, di)
            sch.vectorize(di)
            sch.unroll(dki)
        sch.decompose_reduction(rescale, g)
        init = sch.decompose_reduction(dot, block)
        sch.vectorize(sch.get_loops(init)[-1])
        if self.intrinsic is not None:
            sch.tensorize(di, self.intrinsic)

    @staticmethod
    def _unpack_loops(sch: s_tir.Schedule, unpacked: s_tir.schedule.SBlockRV) -> tuple:
        """The unpacking's loop over the block's two nibbles and its 64 fused byte lanes (16 channels x 4 inputs)."""
        nibble, channel, inner = sch.get_loops(unpacked)[-3:]
        return nibble, sch.fuse(channel, inner)
