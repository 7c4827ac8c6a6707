"""Rule: slmc's quantized linear kernels (GEMV in decode, GEMM in prefill), dequantization fused.

Targets PrimFuncs marked ``slmc.kernel = "quantized_linear"`` (``slmc.quantization.tvm_kernels``).
Two kernel forms, after the weight layout the converter chose:

- Tiled ``[N/nb, K', nb]`` codes, group-factored sum (``_group_factored_matmul``): ``schedule_tiled``.
  Parallel over tiles: each tile's codes are one contiguous block that one chunk streams front to
  back (hardware prefetch keeps up); per group of ``K`` the raw codes are multiplied into a
  per-group dot (one FMA per weight) that is shifted and scaled once per group. Two nests, chosen
  at run time by the row count ``M`` (dynamic in a model)::

    M == 1 (decode)                                   M > 1 (prefill)
    parallel for tile in N / nb:                      parallel for tile in N / nb:
      for m in M:                                       for rb in M / ROW_BLOCK (32 rows):
        acc[0:nb] = 0                                     out[rb, tile] = 0
        for g in G:                                       for g in G:
          dot[0:nb] = 0                                     codes[0:group, 0:nb] = float(code)   # L1
          for i in group (int4: nibbles unrolled):          for m in rb:
            dot += x[m, i] * float(code[tile, i, :])          dot[0:nb] = sum_i x[m, i] * codes[i, :]
          acc += (dot - zero * xsum[m, g]) * scale            out[m, tile] += (dot - zero * xsum[m, g]) * scale
        out[m, tile] = epilogue(acc)                    epilogue(out[:, tile])

  Decode unpacks each code where it is used and, first in each group's iteration, prefetches the
  chunk's codes of a group 2 KB ahead (``_prefetch_codes``: with hardware prefetch alone the two-core
  decode GEMV took its compute *plus* its DRAM waits, ~1/2 of the W4A8 kernel's bytes per second;
  docs/dev-notes.md, "Session 10"); prefill unpacks a ``[group, nb]`` block once per
  tile, row block and group and the block's rows reuse it, and the block's ``[32, nb]`` output strip
  stays in L1 across the groups. The rows of whole blocks (``M - M mod 32``; ``row_branch.split_rows``:
  a copy of the kernel whose row count is a multiple of 32, so no loop carries a bounds check) go
  through a register tile (``_schedule_tiles``)::

    for m4 in rb / 4:                                  # AVX-512: 4 rows x 4 vectors = 16 zmm accumulators
      dot[0:4, 0:nb] = 0
      for i in group:  for r in 4 (unrolled):  dot[r, :] += x[m4 + r, i] * codes[i, :]
      out[m4 : m4 + 4, tile] += (dot - zero * xsum) * scale

  so each code vector loaded feeds 4 FMAs (the inner loop is 4 loads, 4 broadcasts, 16 FMAs); the
  last ``M mod 32`` rows run the one-row-at-a-time form above as one block.
  int4 codes are uint32 words of 8 consecutive inputs of one channel, and the unpacked value is the
  float ``1 + code / 16`` (``tvm_kernels._unit_code``): per 16 weights one shift, one ``vpternlogd``
  and one FMA on AVX-512 (the decode loop went from ~38 to ~28 instructions per 128 weights; no
  ``vpmovzxbd`` / ``vextracti*`` shuffles, no ``vcvtdq2ps``; docs/dev-notes.md).
  Measured one thread, AVX-512, int4 g32 (``benchmarks/quantized_kernel_speed.py``): decode ~27 GB/s
  of weights (576->49152), prefill 128 rows 150-175 GFLOP/s, against 14 GB/s and 15-60 GFLOP/s for
  the transposed form below.
- Transposed ``[K', N]`` codes (no tile width divides ``N``): the shared row loop nest of
  ``slmc.schedules.row_matmul``, each weight dequantized inside the reduction; for int4 the ``k`` loop
  is split by 2 and unrolled so both nibbles of one loaded byte vector are used.

No float copy of a whole weight exists at run time in either form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tvm import DataType, s_tir, tirx
from tvm.target import Target

from slmc.schedules.prefetch import LINE_BYTES, prefetch, prepend_to_loop
from slmc.schedules.row_matmul import (STACK_SCOPE, CpuParams, fold_epilogues, is_reduction, matmul_block,
                                      root_blocks, schedule_row_matmul, static_extent, vectorize_tails)
from slmc.schedules.row_branch import branch_on_rows, split_rows
from slmc.schedules.rule import SlmcCpuRule

KIND = "quantized_linear"
ACCUMULATOR_VECTORS = 4  # vectors of output channels accumulated in registers per chunk (tiled form)
ROW_BLOCK = 32  # rows per block of the prefill nest: its [32, vector] output strip + [32, group] x slice stay in L1
SHARED_BLOCK_BYTES = 256 * 1024  # largest unpacked [group, chunk] float block of the prefill nest (stack, L2)


class QuantizedMatmul(SlmcCpuRule):
    """Schedules ``slmc.kernel = quantized_linear`` kernels (see the module docstring)."""

    def schedule(self, func: tirx.PrimFunc, target: Target, params: CpuParams) -> s_tir.Schedule | None:
        if self.kernel_kind(func) != KIND:
            return None
        if _group_dot_block(s_tir.Schedule(func)) is not None:
            return schedule_tiled(func, params)
        sch = s_tir.Schedule(func)
        block = matmul_block(sch)
        if block is None:
            return None
        scheduled = schedule_row_matmul(sch, block, params, k_unroll=2 if _packs_nibbles(sch, block) else 1)
        if scheduled is None and _reads_multi_element_regions(sch, block):
            return _parallel_channels(func)
        return scheduled


def _reads_multi_element_regions(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    """Whether one iteration of ``block`` reads more than one element of a buffer: packed 6-bit scale codes
    (three bytes per code, ``tvm_kernels._scale``). dlight's GEMV analysis asserts on such a region
    (``collect_block_iter_vars_used_in_access_region``) instead of declining, so this rule must take the kernel."""
    return any(not (isinstance(r.extent, tirx.IntImm) and int(r.extent) == 1)
               for region in sch.get(block).reads for r in region.region)


def _parallel_channels(func: tirx.PrimFunc) -> s_tir.Schedule:
    """The transposed kernel with packed scale codes when ``schedule_row_matmul`` declines it (``N`` no multiple
    of the vector width, so no tile width divides it either): output channels in parallel, each channel's
    reduction as written. Correct, not fast: a fallback for shapes no tiled layout fits."""
    sch = s_tir.Schedule(func)
    block = matmul_block(sch)
    m, n, k = sch.get_loops(block)
    sch.reorder(n, m, k)
    sch.parallel(n)
    return sch


def _kinds(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> list[int]:
    return [int(iv.iter_type) for iv in sch.get(block).iter_vars]


def _group_dot_block(sch: s_tir.Schedule) -> s_tir.schedule.SBlockRV | None:
    """The per-group dot block ``[M, N, G] <- sum over one group`` of the tiled form, else ``None``."""
    spatial, reduce = int(tirx.IterVar.DataPar), int(tirx.IterVar.CommReduce)
    found = [b for b in root_blocks(sch) if _kinds(sch, b) == [spatial, spatial, spatial, reduce]]
    return found[0] if len(found) == 1 else None


def _tile_codes(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> tirx.Buffer | None:
    """The 3-D codes ``[N/nb, K', nb]`` the block reads (``uint8`` int8 codes, ``uint32`` words of int4 ones)."""
    codes = [r.source for r in sch.get(block).reads
             if str(r.source.dtype) in ("uint8", "uint32") and len(r.source.shape) == 3]
    return codes[0] if len(codes) == 1 else None


@dataclass(frozen=True)
class _TiledShape:
    """What the two loop nests of the tiled form need to know about one kernel."""

    width: int  # channels per tile
    vector: int  # channels per chunk: the tile, or a slice of ACCUMULATOR_VECTORS vectors of it
    pairs: int  # codes per stored element along K: 8 for int4 words (all nibbles unrolled), else 1
    group: int  # inputs per group (K for per-channel scales)
    rows: tirx.PrimExpr  # M, the token axis (dynamic in a model: 1 in decode)


def _tiled_shape(sch: s_tir.Schedule, params: CpuParams) -> _TiledShape | None:
    """The tiled form's blocks are where and what the converter emits them, else ``None``."""
    dots = _group_dot_block(sch)
    if dots is None:
        return None
    producers = [b for b in sch.get_producers(dots) if _tile_codes(sch, b) is not None]
    consumers = list(sch.get_consumers(dots))
    if len(producers) != 1 or len(consumers) != 1 or not isinstance(_tile_codes(sch, producers[0]).shape[2], tirx.IntImm):
        return None
    if _kinds(sch, consumers[0]) != [int(tirx.IterVar.DataPar), int(tirx.IterVar.DataPar), int(tirx.IterVar.CommReduce)]:
        return None
    codes = _tile_codes(sch, producers[0])
    width = int(codes.shape[2])
    vector = min(width, ACCUMULATOR_VECTORS * params.lanes)
    groups, group = (int(iv.dom.extent) for iv in sch.get(dots).iter_vars[2:])
    pairs = groups * group // int(codes.shape[1])  # int4: the 8 nibbles of one word
    if width % vector or group % pairs:
        return None
    return _TiledShape(width, vector, pairs, group, sch.get(dots).iter_vars[0].dom.extent)


def schedule_tiled(func: tirx.PrimFunc, params: CpuParams, nest: PrefillNest | None = None) -> s_tir.Schedule | None:
    """The tiled form, scheduled for its row count: ``_schedule_rows`` for one row (decode),
    ``_prefill`` for more (``nest``: its choices, default ``PrefillNest()``). With a dynamic row count
    both are built and the kernel picks one at run time (``if M == 1``). Groups whose unpacked block
    would exceed ``SHARED_BLOCK_BYTES`` (per-channel scales on a wide ``K``) get the decode nest for
    every row count. ``None`` if the kernel is not of the expected shape.
    """
    shape = _tiled_shape(s_tir.Schedule(func), params)
    if shape is None:
        return None
    single = isinstance(shape.rows, tirx.IntImm) and int(shape.rows) == 1
    if single or shape.group * shape.vector * 4 > SHARED_BLOCK_BYTES:
        return s_tir.Schedule(_schedule_rows(s_tir.Schedule(func), shape, params))
    prefill = _prefill(func, shape, params, nest or PrefillNest())
    if isinstance(shape.rows, tirx.IntImm):
        return s_tir.Schedule(prefill)
    decode = _schedule_rows(s_tir.Schedule(func), shape, params)
    return s_tir.Schedule(branch_on_rows(decode, prefill, shape.rows))


def _prepare(sch: s_tir.Schedule, params: CpuParams) -> tuple:
    """Common to both nests: producers (an input scale) computed once, vectorized (inlined, they
    would be recomputed for every tile); returns (codes, dots, out, epilogues) blocks."""
    dots = _group_dot_block(sch)
    codes = next(b for b in sch.get_producers(dots) if _tile_codes(sch, b) is not None)
    out = sch.get_consumers(dots)[0]
    names = {str(sch.get(b).name_hint) for b in (codes, dots, out)}
    after = {str(sch.get(b).name_hint) for b in sch.get_consumers(out)}
    for block in root_blocks(sch):
        name = str(sch.get(block).name_hint)
        if name not in names and name not in after and not is_reduction(sch, block):
            _vectorize_innermost(sch, block, params)
    epilogues = [b for b in root_blocks(sch) if str(sch.get(b).name_hint) in after]
    return codes, dots, out, epilogues


def decode_chunk(channels: int | None, width: int, widest: int, params: CpuParams) -> int:
    """Channels per parallel chunk of the decode nest: of the whole-vector slices of a tile no wider
    than ``widest``, the one that leaves the busiest core the fewest channels (the widest on a tie).

    TVM's parallel loop gives each core one contiguous run of ``ceil(chunks / cores)`` chunks, and a
    decode GEMV is memory-bound, so its time is the busiest core's channels: a 576->192 projection in
    3 chunks of 64 keeps one of 2 cores idle half the kernel (2 chunks against 1; 6 chunks of 32: none),
    576->576 in 9 chunks of 64 a fifth of it (5 against 4; 18 of 32: none). ``channels`` unknown (``None``): ``widest``.
    """
    lanes, cores = params.lanes, max(1, params.cores)
    widths = [w for w in range(widest, 0, -lanes) if w % lanes == 0 and width % w == 0]
    if channels is None or not widths:
        return widest

    def busiest(w: int) -> int:  # channels of the core with the most chunks
        chunks = -(-channels // w)
        return -(-chunks // cores) * w

    return min(widths, key=lambda w: (busiest(w), -w))


def _chunks(sch: s_tir.Schedule, out: s_tir.schedule.SBlockRV, shape: _TiledShape, inner_rows: bool,
            vector: int | None = None) -> tuple:
    """Split ``out``'s channels into (parallel chunk of ``vector`` channels, default ``shape.vector``, vector
    lanes); rows inside or outside the group loop."""
    vector = vector or shape.vector
    m, n, g = sch.get_loops(out)
    tile, part, lanes = sch.split(n, factors=[None, shape.width // vector, vector])
    sch.reorder(tile, part, *((g, m) if inner_rows else (m, g)), lanes)
    chunk = sch.fuse(tile, part)
    sch.vectorize(lanes)
    sch.parallel(chunk)
    return chunk, m, g


def _vectorized_dots(sch: s_tir.Schedule, dots: s_tir.schedule.SBlockRV, pairs: int) -> None:
    """Under its compute-at loop: reduction outside, channels vectorized inside (int4: the nibbles of a word unrolled)."""
    channel, inner = sch.get_loops(dots)[-2:]
    step, pair = sch.split(inner, factors=[None, pairs])
    sch.reorder(step, pair, channel)
    sch.unroll(pair)
    sch.vectorize(channel)
    sch.decompose_reduction(dots, step)


def _schedule_rows(sch: s_tir.Schedule, shape: _TiledShape, params: CpuParams) -> tirx.PrimFunc:
    """Decode: each code is unpacked where it is used, per-group dots and the accumulator in registers
    (``STACK_SCOPE`` buffers: on the stack, no runtime workspace call per chunk); each group's iteration
    prefetches the codes of a group ``PREFETCH_AHEAD_BYTES`` ahead (``_prefetch_codes``)."""
    codes, dots, out, epilogues = _prepare(sch, params)
    table = _tile_codes(sch, codes)
    sch.compute_inline(codes)
    channels = static_extent(sch, sch.get_loops(out)[1])
    vector = decode_chunk(channels, shape.width, shape.vector, params)
    chunk, m, g = _chunks(sch, out, shape, inner_rows=False, vector=vector)
    accumulator = sch.cache_write(out, 0, STACK_SCOPE)
    sch.reverse_compute_at(accumulator, m)
    kept = fold_epilogues(sch, epilogues, m)
    sch.compute_at(dots, g)
    sch.set_scope(dots, 0, STACK_SCOPE)
    _vectorized_dots(sch, dots, shape.pairs)
    sch.decompose_reduction(out, g)
    vectorize_tails(sch, [accumulator, *kept])
    return _prefetch_codes(sch, table, chunk, g, shape, vector)


PREFETCH_AHEAD_BYTES = 2048  # how far ahead of its reads a decode chunk prefetches its codes (2 groups of 64 int4 channels)
PREFETCH_LINES = 32  # at most this many prefetches per group (a wider group: per-channel scales, hardware prefetch only)


def _prefetch_codes(sch: s_tir.Schedule, table: tirx.Buffer, chunk: s_tir.schedule.LoopRV, g: s_tir.schedule.LoopRV,
                    shape: _TiledShape, vector: int) -> tirx.PrimFunc:
    """The scheduled decode nest with, first in each group's iteration, one prefetch per cache line of the
    chunk's codes of the group ``ceil(PREFETCH_AHEAD_BYTES / group bytes)`` groups ahead (``slmc.schedules.prefetch``).

    Without it the decode GEMV's time on two cores was its compute plus its DRAM waits: hardware prefetch
    alone left the int4 kernel at ~1/2 of the W4A8 kernel's bytes per second on the same codes, while its
    compute allows ~2 cores x 15 GB/s (docs/dev-notes.md, "Session 10"). The last groups' prefetches
    reach into the next chunk's codes (the chunk a core runs next when the chunk is the whole tile) or past
    the buffer (harmless). Groups of more than ``PREFETCH_LINES`` lines get none (returned unchanged).
    """
    func = sch.mod["main"]
    itemsize = DataType(table.dtype).bits // 8
    rows = shape.group // shape.pairs  # rows of codes (uint32 words of 8 nibbles, or bytes) per group
    per_line = LINE_BYTES // itemsize  # channels per cache line of one row
    lines = [(r, lane) for r in range(rows) for lane in range(0, vector, per_line)]
    if len(lines) > PREFETCH_LINES:
        return func
    ahead = -(-PREFETCH_AHEAD_BYTES // (rows * vector * itemsize))
    loop, index = sch.get(g), sch.get(chunk).loop_var
    parts = shape.width // vector
    dtype = str(index.ty)
    tile, first_lane = index // parts, (index % parts) * vector
    first_row = ((loop.loop_var + ahead) * rows).astype(dtype)
    loads = [tirx.BufferLoad(table, [tile, first_row + r, first_lane + tirx.const(lane, dtype)]) for r, lane in lines]
    return prepend_to_loop(func, loop, [prefetch(load) for load in loads])


@dataclass(frozen=True)
class PrefillNest:
    """The prefill nest's choices (``benchmarks/prefill_nest_ab.py`` compares them).

    ``row_block``: rows per block (0: all rows in one block); ``tile_rows``: rows of the register
    tile of the block's whole-block part (``None``: ``register_tile_rows``; 0: no register tile, the
    whole nest is ``_schedule_shared``).
    """

    row_block: int = ROW_BLOCK
    tile_rows: int | None = None


def register_tile_rows(shape: _TiledShape, params: CpuParams) -> int:
    """Rows of the prefill register tile: its ``rows x vector`` float accumulators take half of the
    vector registers (32 with 512-bit vectors -- AVX-512; 16 assumed narrower: AVX2, conservative for
    NEON's 32), the rest hold the unpacked code vectors and the broadcast input. AVX-512, 64-channel
    chunks: 4 rows x 4 vectors = 16 accumulators; per input 4 loads, 4 broadcasts, 16 FMAs."""
    registers = 32 if params.vector_bits >= 512 else 16
    return max(1, registers // 2 // max(1, shape.vector // params.lanes))


def _prefill(func: tirx.PrimFunc, shape: _TiledShape, params: CpuParams, nest: PrefillNest) -> tirx.PrimFunc:
    """The prefill nest as a PrimFunc. With a register tile: the rows of whole ``row_block`` blocks
    (``row_branch.split_rows``: a copy of the kernel whose row count is a multiple of the block, so
    the tile's loops carry no bounds check) by ``_schedule_tiles``, the last ``M mod row_block`` rows
    by ``_schedule_shared``; without one (or a kernel ``split_rows`` declines), ``_schedule_shared``."""
    tile_rows = register_tile_rows(shape, params) if nest.tile_rows is None else nest.tile_rows
    rows = shape.rows

    def scheduled(part: tirx.PrimFunc, nest_of: Callable) -> tirx.PrimFunc:
        sch = s_tir.Schedule(part)
        nest_of(sch, _tiled_shape(sch, params), params)
        return sch.mod["main"]

    def tiles(part: tirx.PrimFunc) -> tirx.PrimFunc:
        return scheduled(part, lambda sch, s, p: _schedule_tiles(sch, s, p, nest.row_block, tile_rows))

    def shared(part: tirx.PrimFunc, row_block: int = nest.row_block) -> tirx.PrimFunc:
        return scheduled(part, lambda sch, s, p: _schedule_shared(sch, s, p, row_block))

    if not tile_rows or not nest.row_block or nest.row_block % tile_rows:
        return shared(func)
    if isinstance(rows, tirx.IntImm):
        return tiles(func) if int(rows) % nest.row_block == 0 else shared(func)
    split = None
    if isinstance(rows, tirx.Var):  # the tail has fewer rows than a block: one block, no bounds check
        split = split_rows(func, rows, nest.row_block, main=tiles, tail=lambda part: shared(part, row_block=0))
    return split if split is not None else shared(func)


def _schedule_tiles(sch: s_tir.Schedule, shape: _TiledShape, params: CpuParams, row_block: int, tile_rows: int) -> None:
    """Prefill of whole row blocks (``M`` a multiple of ``row_block``, so every split below is exact):
    as ``_schedule_shared`` -- per chunk, row block and group one unpacked ``[group, vector]`` block in
    L1 -- but the block's rows go ``tile_rows`` at a time through a register tile: the tile's
    ``[tile_rows, vector]`` per-group dots stay in registers over the group's inputs (``k`` outside,
    rows unrolled, channels vectorized), so each code vector loaded feeds ``tile_rows`` FMAs instead
    of one. The inner loop is loads, broadcasts and FMAs only (docs/dev-notes.md, objdump)."""
    codes, dots, out, epilogues = _prepare(sch, params)
    m, n, g = sch.get_loops(out)
    tile, part, lanes = sch.split(n, factors=[None, shape.width // shape.vector, shape.vector])
    block, tile_row, row = sch.split(m, factors=[None, row_block // tile_rows, tile_rows])
    sch.reorder(tile, part, block, g, tile_row, row, lanes)
    chunk = sch.fuse(tile, part)
    sch.vectorize(lanes)
    sch.parallel(chunk)
    sch.unroll(row)
    kept = fold_epilogues(sch, epilogues, chunk)
    sch.compute_at(dots, tile_row)
    sch.set_scope(dots, 0, STACK_SCOPE)  # [tile_rows, vector]: on the stack when under 1 KB (4 x 64 floats is not)
    rows_of_tile, channel, inner = sch.get_loops(dots)[-3:]
    step, pair = sch.split(inner, factors=[None, shape.pairs])
    sch.reorder(step, pair, rows_of_tile, channel)
    sch.unroll(pair)
    sch.unroll(rows_of_tile)
    sch.vectorize(channel)
    sch.decompose_reduction(dots, step)
    _unpack_per_group(sch, codes, g, shape)
    init = sch.decompose_reduction(out, g)
    vectorize_tails(sch, [init, *kept])


def _unpack_per_group(sch: s_tir.Schedule, codes: s_tir.schedule.SBlockRV, g: s_tir.schedule.LoopRV,
                      shape: _TiledShape) -> None:
    """The codes of one group and chunk unpacked under ``g`` into a local ``[group, vector]`` float block."""
    sch.compute_at(codes, g)
    sch.set_scope(codes, 0, "local")  # [group, vector] floats (8 KB): a workspace per chunk (parallel task) either way
    k, lane = sch.get_loops(codes)[-2:]
    sch.unroll(sch.split(k, factors=[None, shape.pairs])[1])
    sch.vectorize(lane)


def _schedule_shared(sch: s_tir.Schedule, shape: _TiledShape, params: CpuParams, row_block: int = ROW_BLOCK) -> None:
    """Prefill: rows in blocks of ``row_block`` outside the group loop; per chunk, row block and group
    the codes are unpacked once into a ``[group, vector]`` float block (L1) that the block's rows reuse,
    and the block's ``[row_block, vector]`` output strip accumulates in L1 across groups (without the
    row blocks every group streamed the whole ``[M, vector]`` strip and ``x`` through L2: 1,024 rows ran
    at ~1/4 of 128 rows' rate; docs/dev-notes.md). ``row_block`` 0: all rows in one block."""
    codes, dots, out, epilogues = _prepare(sch, params)
    chunk, m, g = _chunks(sch, out, shape, inner_rows=True)
    kept = fold_epilogues(sch, epilogues, chunk)
    if row_block:
        block, m = sch.split(m, factors=[None, row_block])
        sch.reorder(block, g)
    sch.compute_at(dots, m)
    sch.set_scope(dots, 0, STACK_SCOPE)  # one row's [vector] dots (256 B): on the stack, not a workspace per chunk
    _vectorized_dots(sch, dots, shape.pairs)
    _unpack_per_group(sch, codes, g, shape)
    init = sch.decompose_reduction(out, g)
    vectorize_tails(sch, [init, *kept])


def _vectorize_innermost(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, params: CpuParams) -> None:
    """Vectorize the block's innermost loop by the vector width when that divides its static extent."""
    loop = sch.get_loops(block)[-1]
    extent = sch.get(loop).extent
    if isinstance(extent, tirx.IntImm) and int(extent) % params.lanes == 0:
        sch.vectorize(sch.split(loop, factors=[None, params.lanes])[1])


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
