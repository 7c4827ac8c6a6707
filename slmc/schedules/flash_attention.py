"""TIR kernel: causal attention over the resident KV cache in one pass, tiled, with an online softmax.

``slmc.schedules.flash_rewrite`` replaces each layer's chain ``attention_scores -> scale -> + mask ->
softmax -> attention_values`` (``slmc.schedules.attention_rewrite``, ``slmc.schedules.resident_kv``) by
this kernel::

    out[h, m, :] = softmax_n(scale * Q[h, m, :] . K[layer, 0, h // g, n, :] + mask[m, n]) @ V[layer, 0, h // g, :, :]

For a prompt of ``T`` tokens the chain materialized the ``[H, T, P + T]`` scores three times (scores,
masked, probabilities): 38 MB per layer of the SmolLM-135M shape at ``T = 1,024``, written and read
back by four kernels. Here no ``T x N`` buffer exists (Dao et al., "FlashAttention: Fast and
Memory-Efficient Exact Attention with IO-Awareness", NeurIPS 2022, arXiv:2205.14135; the online
softmax of Milakov & Gimelshein, arXiv:1805.02867). One work item is one KV head and a block of
``block_q`` query positions, i.e. the ``g`` query heads sharing that KV head times those positions
(``rows = g x block_q``), so every key and value tile is loaded once for all of them::

    parallel for (kv head, query block):               # query blocks in zig-zag order (balanced causal work)
      acc[rows, D] = 0, best[rows] = -big, total[rows] = 0
      for key block of block_k keys:
        tile = mask[query block, key block]            # -inf past the last key / row
        if every entry of tile is -inf: skip           # causal: the blocks above the diagonal
        Kt[D, block_k] = K[key block]^T                # prefill: transposed once for all rows
        S[rows, block_k] = Q[rows] Kt * scale + tile   # row blocks x key vector: a register-blocked GEMM
        best' = max(best, max_j S); P = exp(S - best'); c = exp(best - best')
        total = total * c + sum_j P; acc = acc * c + P V[key block]
      out[rows] = acc / total

The decode form (``block_q = 1``, ``transposed_keys = False``) takes one key at a time: its ``D``
numbers are loaded once for all rows of the item (``ROW_UNROLL`` at a time, independent chains of
``D / lanes`` vector multiply-adds), and each row's lanes are then summed pairwise, ``log2(lanes)``
shuffles and adds in registers (a loop over the lanes was one dependent scalar add per lane: 16 per
score on AVX-512, and the key reloaded per row). The row maxima and sums of the online softmax and
the mask tile's "anything visible" test are pairwise vector reductions too. It runs serially, as the
score and value kernels did for one row, below ``2 x SPLIT_KEYS`` keys. From there it is split over the keys
(flash-decoding: Dao, Haziza, Massa, Sizov, "Flash-Decoding for long-context inference", 2023): the work
items are (KV head, key range) pairs, ``clamp(keys // SPLIT_KEYS, 1, MAX_SPLITS)`` ranges per head, run on
TVM's thread pool; each keeps its own running max, sum and unnormalized ``acc`` and writes them to a static
scratch buffer, and one serial merge rescales them to the common max::

    m = max_s best_s;  out = sum_s exp(best_s - m) acc_s / sum_s exp(best_s - m) total_s

A parallel loop over the KV heads alone would leave a core idle part of the time (SmolLM-135M's 3 KV heads
on 2 threads: 67% use); each item still loads every key once for all rows sharing it. ``flash_attention_func`` joins the three nests, chosen at run time by the row
count and the key count (``slmc.schedules.row_branch``). Exactness: the same sums of the same products as the chain, in
another order (online softmax rescaling is exact up to rounding). ``exp`` becomes slmc's
vectorizable polynomial (``slmc.schedules.fast_exp``) like everywhere else on CPU.

The serial decode form first prefetches (``slmc.schedules.prefetch``) the cache lines of its first
``PREFETCH_BYTES`` of keys and values, every KV head: in a real step the weights streamed since the previous
layer (SmolLM-135M int4: ~76 MB, more than the last-level cache) have evicted them, and one key block at a time
the hardware prefetcher restarts on every 4 KB page. SmolLM-135M at 128 keys, float16 cache, cache evicted
before each call: ~21.7 -> ~17.9 us per layer (from cache: ~4 us; docs/dev-notes.md, "Session 13"). The split
form's long key ranges are left to the hardware prefetcher (software prefetch there was 15-50% slower).

A cache stored in int8 (``slmc.schedules.resident_kv``) adds its scales ``[layers, 1, kv_heads, slots]``
after the caches (one per key or value row). The dot products read the int8 codes converted to float32
and each row's scale is applied once, not per element: a score is ``(q . k_codes) * (scale * key_scale)``,
and the value rows' scales are folded into the probabilities after their row sum, ``acc += (p * value_scale)
v_codes``; a quarter of the bytes streamed per key, the same sums over the dequantized cache as the score
and value kernels compute, up to rounding. SmolLM-135M shape, decode at context 2,000, 30 layers, one
thread (``benchmarks/attention_kernel_speed.py``): see docs/dev-notes.md.

A cache stored in float16 is read as its numbers widened to float32 as they are loaded (``vcvtph2ps`` on x86),
everything else in float32: half the bytes streamed per key of the float32 cache.

The mask is the model's own additive mask (``[T, N]`` or ``[1, 1, T, N]``): nothing about causality
is assumed, fully masked tiles are found by reading it (``T x N`` floats read once per layer, shared
by all heads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tvm
from tvm import tirx
from tvm.script import tirx as T

from slmc.errors import BuildError
from slmc.schedules.prefetch import LINE_BYTES, prefetch_call
from slmc.schedules.row_branch import branch_on_condition, branch_on_rows
from slmc.schedules.rule import KERNEL_ATTR
from slmc.schedules.row_matmul import STACK_SCOPE

KIND = "flash_attention"
BLOCK_Q = 16   # query positions per work item in prefill (rows = query heads per KV head x BLOCK_Q)
BLOCK_K = 32   # keys per tile: two AVX-512 vectors of scores per row
ROW_UNROLL = 4  # rows accumulated at once in the score and value loops (independent FMA chains)
NEG_BIG = -3.0e38  # running maximum before any visible key: finite, so exp(-inf - NEG_BIG) = 0, never NaN
SPLIT_KEYS = 256  # decode: keys per (KV head, key range) item at least; fewer than 2 x this run serially
PREFETCH_BYTES = 128 * 1024  # serial decode: cache bytes prefetched up front at most (all of SmolLM-135M's float16 128 keys)
MAX_SPLITS = 16  # decode: key ranges per KV head at most (the scratch buffer's static size)
OPAQUE = 8  # relax.transform's OpPatternKind.kOpaque: FuseOps fuses nothing into this kernel


@dataclass(frozen=True)
class FlashShape:
    """Static sizes of one layer's attention on the resident cache ``[layers, 1, kv_heads, slots, depth]``."""

    heads: int
    kv_heads: int
    depth: int
    slots: int
    layers: int
    layer: int
    scale: float
    mask_rank: int  # 2: [T, N]; 4: [1, 1, T, N]
    cache_dtype: str = "float32"  # float32, float16, or int8 with float32 scales (key_scales, value_scales after the caches)

    @property
    def quantized(self) -> bool:
        return self.cache_dtype == "int8"

    @property
    def group(self) -> int:
        return self.heads // self.kv_heads


def _row_unroll(rows: int, vectors_per_row: int = 1, lanes: int = 16) -> int:
    """Rows accumulated at once: a divisor of ``rows``, at most ``ROW_UNROLL``, whose accumulators
    (``vectors_per_row`` each) fit the vector registers with room for the operands (16 of AVX-512's 32,
    8 of AVX2's 16; the decode form's rows hold ``D / lanes`` vectors each)."""
    budget = 16 if lanes >= 16 else 8
    return next(u for u in (ROW_UNROLL, 3, 2, 1) if rows % u == 0 and (u == 1 or u * vectors_per_row <= budget))


def _code(cache: Any, layer: Any, head: Any, slot: Any, d: Any) -> Any:
    """One cached number as the dot products read it: float32 as stored, a float16 number widened, or an int8
    code as float32 (its row's scale is applied once per dot product, not per element: see the module docstring)."""
    value = cache[layer, T.int64(0), head, slot, d]
    return value if cache.dtype == "float32" else T.Cast("float32", value)


def _lane_reduce(buffer: tirx.Buffer, row: Any, lanes: int, combine=tirx.Add) -> tirx.PrimExpr:
    """``combine`` (``tirx.Add``, ``tirx.Max``) over ``buffer[row, :lanes]`` in ``log2(lanes)`` steps, each
    combining a vector's upper half with its lower half (shuffles in registers; a loop over the lanes is one
    dependent scalar operation per lane). Precondition: ``lanes`` is a power of two (a vector width, or
    ``BLOCK_K``)."""
    if lanes < 1 or lanes & (lanes - 1):
        raise BuildError(f"flash attention reduces power-of-two widths; got {lanes} lanes")
    vector: tirx.PrimExpr = tirx.BufferLoad(buffer, [row, tirx.Ramp(T.int64(0), T.int64(1), lanes)])
    width = lanes
    while width > 1:
        width //= 2
        whole = tirx.Var("lanes", f"float32x{width * 2}")
        low = tirx.Shuffle([whole], [tirx.const(i, "int32") for i in range(width)])
        high = tirx.Shuffle([whole], [tirx.const(width + i, "int32") for i in range(width)])
        vector = tirx.Let(whole, vector, combine(low, high))
    return vector


def _kernel(shape: FlashShape, lanes: int, block_q: int, transposed_keys: bool, parallel: bool,
            split: bool = False) -> tirx.PrimFunc:
    """One loop nest of the module docstring (``block_q`` positions per item; keys transposed per tile or not).

    ``split`` (decode only: precondition one query row, ``block_q = 1``) is flash-decoding: the items are
    (KV head, key range) pairs, ``splits = clamp(keys // SPLIT_KEYS, 1, MAX_SPLITS)`` ranges per head, each
    writing its unnormalized ``acc`` with its running max and sum to a scratch buffer; one merge rescales them
    to the common maximum (exact up to rounding, as the online softmax is).
    """
    heads, kv_heads, depth, slots, layers = shape.heads, shape.kv_heads, shape.depth, shape.slots, shape.layers
    group, layer, scale, four_d = shape.group, shape.layer, shape.scale, shape.mask_rank == 4
    quantized = shape.quantized
    rows_per_item = group * block_q
    unroll = _row_unroll(rows_per_item) if transposed_keys else _row_unroll(rows_per_item, depth // lanes, lanes)
    bk = BLOCK_K
    i64 = T.int64
    loop = T.parallel if parallel else T.serial
    minus_inf = tirx.const(float("-inf"), "float32")
    if split and (block_q != 1 or transposed_keys):
        raise BuildError("flash attention splits the keys of the decode form only (one query row, keys read in place)")
    line_items = LINE_BYTES * 8 // tvm.DataType(shape.cache_dtype).bits  # cached numbers per cache line
    block_lines = -(-bk * depth // line_items)  # cache lines of one key block's keys (contiguous; as many of its values)
    # the serial decode form (fewer than 2 x SPLIT_KEYS keys) prefetches all it reads up front; the split form
    # (hardware prefetch keeps up with its long key ranges: software prefetch there cost 15-50%) and prefill do not
    decode_prefetch = block_q == 1 and not transposed_keys and not split
    prefetch_blocks_per_head = max(1, PREFETCH_BYTES // (kv_heads * 2 * block_lines * LINE_BYTES))
    stride = depth + 2  # a split's partial result per row: acc[depth], its running max, its running sum
    partial_size = kv_heads * MAX_SPLITS * rows_per_item * stride if split else 1

    def block_count(rows: Any) -> Any:
        return i64(1) if split else (rows + i64(block_q - 1)) // i64(block_q)

    def split_count(keys: Any) -> Any:
        return T.min(i64(MAX_SPLITS), T.max(i64(1), keys // i64(SPLIT_KEYS))) if split else i64(1)

    @T.macro
    def merge(out, partial, splits):
        for kv, r in T.grid(i64(kv_heads), i64(rows_per_item)):
            with T.sblock("merge"):
                state = T.sblock_alloc_buffer((i64(3),), "float32", scope=STACK_SCOPE)  # max, sum, a split's weight
                acc = T.sblock_alloc_buffer((i64(depth),), "float32", scope=STACK_SCOPE)
                state[0] = T.float32(NEG_BIG)
                for sp in T.serial(splits):
                    state[0] = T.max(state[0], partial[((kv * splits + sp) * i64(rows_per_item) + r) * i64(stride) + i64(depth)])
                state[1] = T.float32(0)
                for d in T.vectorized(i64(depth)):
                    acc[d] = T.float32(0)
                for sp in T.serial(splits):
                    state[2] = T.exp(partial[((kv * splits + sp) * i64(rows_per_item) + r) * i64(stride) + i64(depth)] - state[0])
                    state[1] = state[1] + state[2] * partial[((kv * splits + sp) * i64(rows_per_item) + r) * i64(stride) + i64(depth + 1)]
                    for d in T.vectorized(i64(depth)):
                        acc[d] = acc[d] + state[2] * partial[((kv * splits + sp) * i64(rows_per_item) + r) * i64(stride) + d]
                for d in T.vectorized(i64(depth)):
                    out[kv * i64(group) + r, i64(0), d] = acc[d] / state[1]

    @T.macro
    def prefetch_blocks(kc, vc, ks, vs, kv, start, end):
        # key blocks [start, end) of KV head kv: their keys and values (and int8 row scales), one prefetch per cache line
        for kb, line in T.grid(end - start, i64(block_lines)):
            slot = T.meta_var(T.min((start + kb) * i64(bk) + line * i64(line_items) // i64(depth), i64(slots - 1)))
            d = T.meta_var(line * i64(line_items) % i64(depth))
            T.evaluate(prefetch_call(kc[i64(layer), i64(0), kv, slot, d]))
            T.evaluate(prefetch_call(vc[i64(layer), i64(0), kv, slot, d]))
        if quantized:
            for kb, line in T.grid(end - start, i64(-(-bk * 4 // LINE_BYTES))):
                T.evaluate(prefetch_call(ks[i64(layer), i64(0), kv, T.min((start + kb) * i64(bk) + line * i64(LINE_BYTES // 4), i64(slots - 1))]))
                T.evaluate(prefetch_call(vs[i64(layer), i64(0), kv, T.min((start + kb) * i64(bk) + line * i64(LINE_BYTES // 4), i64(slots - 1))]))

    @T.macro
    def item_body(q, kc, vc, ks, vs, mask, out, partial, rows, keys, blocks, splits, key_blocks, chunk, item):
                kt = T.sblock_alloc_buffer((i64(depth), i64(bk)), "float32", scope=STACK_SCOPE)
                tile = T.sblock_alloc_buffer((i64(block_q), i64(bk)), "float32", scope=STACK_SCOPE)
                s = T.sblock_alloc_buffer((i64(rows_per_item), i64(bk)), "float32", scope=STACK_SCOPE)
                part = T.sblock_alloc_buffer((i64(unroll), i64(lanes)), "float32", scope=STACK_SCOPE)
                kscale = T.sblock_alloc_buffer((i64(bk),), "float32", scope=STACK_SCOPE)  # int8: the tile's row scales
                vscale = T.sblock_alloc_buffer((i64(bk),), "float32", scope=STACK_SCOPE)
                acc = T.sblock_alloc_buffer((i64(rows_per_item), i64(depth)), "float32", scope=STACK_SCOPE)
                best = T.sblock_alloc_buffer((i64(rows_per_item),), "float32", scope=STACK_SCOPE)
                total = T.sblock_alloc_buffer((i64(rows_per_item),), "float32", scope=STACK_SCOPE)
                state = T.sblock_alloc_buffer((i64(3),), "float32", scope=STACK_SCOPE)  # visible, new max, correction
                kv: T.let[T.int64] = item // (blocks * splits)
                zig: T.let[T.int64] = item % (blocks * splits) // splits
                first_block = T.meta_var(item % splits * chunk)
                qb: T.let[T.int64] = T.if_then_else(zig % i64(2) == i64(0), zig // i64(2), blocks - i64(1) - zig // i64(2))
                first: T.let[T.int64] = qb * i64(block_q)
                for r, d in T.grid(i64(rows_per_item), i64(depth)):
                    acc[r, d] = T.float32(0)
                for r in T.serial(i64(rows_per_item)):
                    best[r] = T.float32(NEG_BIG)
                    total[r] = T.float32(0)
                for kbi in T.serial(T.max(i64(0), T.min(key_blocks, first_block + chunk) - first_block)):
                    kb = T.meta_var(first_block + kbi)
                    state[0] = minus_inf
                    for qi in T.serial(i64(block_q)):
                        if first + qi < rows and kb * i64(bk) + i64(bk) <= keys:  # a whole tile: one vector load
                            for j in T.vectorized(i64(bk)):
                                if four_d:
                                    tile[qi, j] = mask[i64(0), i64(0), first + qi, kb * i64(bk) + j]
                                else:
                                    tile[qi, j] = mask[first + qi, kb * i64(bk) + j]
                        else:
                            for j in T.serial(i64(bk)):
                                if four_d:
                                    tile[qi, j] = T.if_then_else(
                                        first + qi < rows and kb * i64(bk) + j < keys,
                                        mask[i64(0), i64(0), T.min(first + qi, rows - i64(1)), T.min(kb * i64(bk) + j, keys - i64(1))],
                                        minus_inf)
                                else:
                                    tile[qi, j] = T.if_then_else(
                                        first + qi < rows and kb * i64(bk) + j < keys,
                                        mask[T.min(first + qi, rows - i64(1)), T.min(kb * i64(bk) + j, keys - i64(1))],
                                        minus_inf)
                        state[0] = T.max(state[0], _lane_reduce(tile, qi, bk, tirx.Max))
                    if state[0] > minus_inf:
                        if quantized:
                            for j in T.serial(i64(bk)):
                                kscale[j] = ks[i64(layer), i64(0), kv, T.min(kb * i64(bk) + j, keys - i64(1))]
                                vscale[j] = vs[i64(layer), i64(0), kv, T.min(kb * i64(bk) + j, keys - i64(1))]
                        # scores S[rows, bk] (of the int8 codes: the key's scale is applied below, once per score)
                        if transposed_keys:
                            for j, d in T.grid(i64(bk), i64(depth)):
                                kt[d, j] = _code(kc, i64(layer), kv, T.min(kb * i64(bk) + j, keys - i64(1)), d)
                            for ro in T.serial(i64(rows_per_item // unroll)):
                                for ri in T.unroll(i64(unroll)):
                                    for j in T.vectorized(i64(bk)):
                                        s[ro * i64(unroll) + ri, j] = T.float32(0)
                                for d in T.serial(i64(depth)):
                                    for ri in T.unroll(i64(unroll)):
                                        for j in T.vectorized(i64(bk)):
                                            s[ro * i64(unroll) + ri, j] = s[ro * i64(unroll) + ri, j] + q[
                                                kv * i64(group) + (ro * i64(unroll) + ri) // i64(block_q),
                                                T.min(first + (ro * i64(unroll) + ri) % i64(block_q), rows - i64(1)),
                                                d] * kt[d, j]
                        else:
                            # per key: its D numbers loaded once for `unroll` rows (independent vector FMA chains),
                            # each row's lanes then summed pairwise (log2(lanes) vector adds)
                            for ro in T.serial(i64(rows_per_item // unroll)):
                                for j in T.serial(i64(bk)):
                                    for ri in T.unroll(i64(unroll)):
                                        for lane in T.vectorized(i64(lanes)):
                                            part[ri, lane] = T.float32(0)
                                    for dv in T.unroll(i64(depth // lanes)):
                                        for ri in T.unroll(i64(unroll)):
                                            for lane in T.vectorized(i64(lanes)):
                                                part[ri, lane] = part[ri, lane] + q[
                                                    kv * i64(group) + (ro * i64(unroll) + ri) // i64(block_q),
                                                    T.min(first + (ro * i64(unroll) + ri) % i64(block_q), rows - i64(1)),
                                                    dv * i64(lanes) + lane] * _code(
                                                    kc, i64(layer), kv, T.min(kb * i64(bk) + j, keys - i64(1)),
                                                    dv * i64(lanes) + lane)
                                    for ri in T.unroll(i64(unroll)):
                                        s[ro * i64(unroll) + ri, j] = _lane_reduce(part, ri, lanes)
                        # online softmax, per row
                        for r in T.serial(i64(rows_per_item)):
                            if quantized:
                                for j in T.vectorized(i64(bk)):
                                    s[r, j] = s[r, j] * (T.float32(scale) * kscale[j]) + tile[r % i64(block_q), j]
                            else:
                                for j in T.vectorized(i64(bk)):
                                    s[r, j] = s[r, j] * T.float32(scale) + tile[r % i64(block_q), j]
                            state[1] = T.max(best[r], _lane_reduce(s, r, bk, tirx.Max))
                            for j in T.vectorized(i64(bk)):
                                s[r, j] = T.exp(s[r, j] - state[1])
                            state[2] = T.exp(best[r] - state[1])
                            total[r] = total[r] * state[2] + _lane_reduce(s, r, bk)
                            best[r] = state[1]
                            for d in T.vectorized(i64(depth)):
                                acc[r, d] = acc[r, d] * state[2]
                            if quantized:  # the value rows' scales go into the probabilities: P diag(scale) V_codes
                                for j in T.vectorized(i64(bk)):
                                    s[r, j] = s[r, j] * vscale[j]
                        # values: acc[rows, D] += P[rows, bk] V[bk, D]
                        for ro in T.serial(i64(rows_per_item // unroll)):
                            for j in T.serial(i64(bk)):
                                for ri in T.unroll(i64(unroll)):
                                    for d in T.vectorized(i64(depth)):
                                        acc[ro * i64(unroll) + ri, d] = acc[ro * i64(unroll) + ri, d] + s[
                                            ro * i64(unroll) + ri, j] * _code(
                                            vc, i64(layer), kv, T.min(kb * i64(bk) + j, keys - i64(1)), d)
                if split:  # this key range's share, merged below
                    for r in T.serial(i64(rows_per_item)):
                        for d in T.vectorized(i64(depth)):
                            partial[(item * i64(rows_per_item) + r) * i64(stride) + d] = acc[r, d]
                        partial[(item * i64(rows_per_item) + r) * i64(stride) + i64(depth)] = best[r]
                        partial[(item * i64(rows_per_item) + r) * i64(stride) + i64(depth + 1)] = total[r]
                else:
                    for r in T.serial(i64(rows_per_item)):
                        if first + r % i64(block_q) < rows:
                            for d in T.vectorized(i64(depth)):
                                out[kv * i64(group) + r // i64(block_q), first + r % i64(block_q), d] = acc[r, d] / total[r]


    @T.macro
    def attend(q, kc, vc, ks, vs, mask, out, rows, keys):
        with T.sblock("attention"):
            partial = T.sblock_alloc_buffer((i64(partial_size),), "float32")  # split: per (item, row) results
            blocks: T.let[T.int64] = block_count(rows)
            splits = T.meta_var(split_count(keys))  # 1 (a constant that folds away) unless split
            key_blocks: T.let[T.int64] = (keys + i64(bk - 1)) // i64(bk)
            chunk = T.meta_var((key_blocks + splits - i64(1)) // splits)  # key blocks per item
            if decode_prefetch:  # the first PREFETCH_BYTES it reads: every load misses in flight at once
                for kv in T.serial(i64(kv_heads)):
                    prefetch_blocks(kc, vc, ks, vs, kv, i64(0), T.min(key_blocks, i64(prefetch_blocks_per_head)))
            for item in loop(i64(kv_heads) * blocks * splits):
                with T.sblock("flash"):
                    item_body(q, kc, vc, ks, vs, mask, out, partial, rows, keys, blocks, splits, key_blocks, chunk, item)
            if split:
                merge(out, partial, splits)

    cache_shape = (i64(layers), i64(1), i64(kv_heads), i64(slots), i64(depth))
    scale_shape = (i64(layers), i64(1), i64(kv_heads), i64(slots))
    if quantized:
        @T.prim_func(private=True, s_tir=True)
        def flash_int8(q_h: T.handle, k_h: T.handle, v_h: T.handle, ks_h: T.handle, vs_h: T.handle, mask_h: T.handle,
                       out_h: T.handle):
            T.func_attr({"tirx.noalias": True, KERNEL_ATTR: KIND, "tirx.is_scheduled": True, "op_pattern": OPAQUE})
            rows = T.int64()
            keys = T.int64()
            q = T.match_buffer(q_h, (i64(heads), rows, i64(depth)), "float32")
            kc = T.match_buffer(k_h, cache_shape, "int8")
            vc = T.match_buffer(v_h, cache_shape, "int8")
            ks = T.match_buffer(ks_h, scale_shape, "float32")
            vs = T.match_buffer(vs_h, scale_shape, "float32")
            mask = T.match_buffer(mask_h, (i64(1), i64(1), rows, keys) if four_d else (rows, keys), "float32")
            out = T.match_buffer(out_h, (i64(heads), rows, i64(depth)), "float32")
            attend(q, kc, vc, ks, vs, mask, out, rows, keys)

        return flash_int8

    @T.prim_func(private=True, s_tir=True)
    def flash(q_h: T.handle, k_h: T.handle, v_h: T.handle, mask_h: T.handle, out_h: T.handle):
        T.func_attr({"tirx.noalias": True, KERNEL_ATTR: KIND, "tirx.is_scheduled": True, "op_pattern": OPAQUE})
        rows = T.int64()
        keys = T.int64()
        q = T.match_buffer(q_h, (i64(heads), rows, i64(depth)), "float32")
        kc = T.match_buffer(k_h, cache_shape, shape.cache_dtype)
        vc = T.match_buffer(v_h, cache_shape, shape.cache_dtype)
        mask = T.match_buffer(mask_h, (i64(1), i64(1), rows, keys) if four_d else (rows, keys), "float32")
        out = T.match_buffer(out_h, (i64(heads), rows, i64(depth)), "float32")
        attend(q, kc, vc, None, None, mask, out, rows, keys)

    return flash


def decode_attention_func(shape: FlashShape, lanes: int, split: bool) -> tirx.PrimFunc:
    """The decode form alone (one query row): serial over the KV heads, or split over (KV head, key range)
    items in parallel with a merge (``benchmarks/attention_kernel_speed.py`` times the two)."""
    return _kernel(shape, lanes, 1, False, split, split=split)


def flash_attention_func(shape: FlashShape, lanes: int) -> tirx.PrimFunc:
    """The kernel for ``shape``, three loop nests chosen at run time: one query row (decode) with fewer than
    ``2 x SPLIT_KEYS`` keys runs serially one key at a time; with more, the same loop over (KV head, key range)
    items in parallel and a merge (flash-decoding); many rows (prefill) are tiled over query blocks in parallel
    with transposed key tiles."""
    serial = decode_attention_func(shape, lanes, False)
    split = decode_attention_func(shape, lanes, True)
    prefill = _kernel(shape, lanes, BLOCK_Q, True, True)
    rows = split.params[0].shape[1]  # the query rows (a buffer parameter: [H, rows, D])
    keys = split.params[-2].shape[-1]  # the mask's key count ([T, N] or [1, 1, T, N])
    decode = branch_on_condition(split, serial, keys >= 2 * SPLIT_KEYS)
    return branch_on_rows(decode, prefill, rows)
