"""QuantizedMatmul: slmc's quantized linear kernels, scheduled on the host (slmc.schedules.quantized_matmul).

Both weight layouts: transposed ``[K', N]`` (each weight dequantized in the reduction) and tiled
``[N/nb, K', nb]`` (group-factored sum), against numpy at 1 (decode), 3 and 128 (prefill) rows.
"""

from __future__ import annotations

import ctypes
import re

import numpy as np
import pytest
import tvm
from schedule_helpers import (AVX512_2CORES, dense_kernel, dequantize, quantized_kernel, run, word_codes,
                              workspace_allocation_bytes)
from tvm import te

from slmc.quantization.tvm_kernels import KERNEL_ATTR, linear_tile_width, quantized_linear_te
from slmc.schedules.quantized_matmul import ROW_BLOCK, QuantizedMatmul, decode_chunk
from slmc.schedules.row_matmul import CpuParams

K, N = 64, 48


def _schedule(func, host_target, params=AVX512_2CORES):
    sch = QuantizedMatmul(params).apply(func, host_target.tvm_target(), False)
    return None if sch is None else sch.mod["main"]


def _tiled(table: np.ndarray, width: int) -> np.ndarray:
    """``[C, N]`` -> ``[N/width, C, width]``: the layout slmc.schedules.prepack stores for the converter's chain."""
    return np.ascontiguousarray(table.reshape(table.shape[0], -1, width).transpose(1, 0, 2))


def _matches_numpy(func, host_target, k, n, bits, group, rows, seed, epilogue=lambda y: y):
    """Run the scheduled tiled kernel (64-channel tiles, symmetric) on random weights against numpy."""
    rng = np.random.default_rng(seed)
    codes, scales, _ = _packed_weights(rng, k, n, bits, group, False)
    x = rng.standard_normal((rows, k)).astype(np.float32)
    stored = word_codes(codes) if bits == 4 else codes
    got = run(func, host_target.tvm_target(), x, _tiled(stored, 64), _tiled(scales, 64), out_shape=(rows, n))
    want = epilogue(x @ dequantize(codes, scales, None, bits, group))
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=1e-5)


def _packed_weights(rng, k, n, bits, group, zeros):
    codes = rng.integers(0, 256 if bits == 4 else 2**bits, (k * bits // 8, n)).astype(np.uint8)
    scales = (rng.random((k // group, n)) * 0.1 + 0.01).astype(np.float16)
    zero = rng.integers(0, 2**bits, (k // group, n)).astype(np.uint8) if zeros else None
    return codes, scales, zero


@pytest.mark.parametrize("bits,zeros,extras", [(4, False, False), (4, True, True), (8, True, False)],
                         ids=["int4-sym", "int4-asym-bias-scale", "int8-asym"])
def test_scheduled_kernel_is_parallel_vectorized_and_matches_numpy(bits, zeros, extras, host_target):
    func = _schedule(quantized_kernel(K, N, bits, 32, zeros=zeros, bias=extras, input_scale=extras), host_target)
    text = func.script()
    assert "T.parallel(" in text and "T.vectorized(16)" in text
    # dequantization stays in the reduction: the only buffer allocated is the [rows, N] accumulator
    assert re.findall(r"T.sblock_alloc_buffer\(\((.*?)\)", text) == ["m, 48"]
    if bits == 4:
        assert "T.unroll(2)" in text  # both nibbles of one byte per load
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256 if bits == 4 else 2 ** bits, (K * bits // 8, N)).astype(np.uint8)
    scales = (rng.random((K // 32, N)) * 0.1 + 0.01).astype(np.float16)
    zero = rng.integers(0, 2 ** bits, (K // 32, N)).astype(np.uint8) if zeros else None
    bias = rng.standard_normal(N).astype(np.float32)
    input_scale = (rng.random(K) + 0.5).astype(np.float32)
    weight = dequantize(codes, scales, zero, bits, 32)
    for rows in (1, 5):
        x = rng.standard_normal((rows, K)).astype(np.float32)
        args = [x, codes, scales] + ([zero] if zeros else []) + ([bias, input_scale] if extras else [])
        got = run(func, host_target.tvm_target(), *args, out_shape=(rows, N))
        want = ((x * input_scale) if extras else x) @ weight + (bias if extras else 0.0)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)


def test_declines_kernels_that_are_not_quantized_linears(host_target):
    assert _schedule(dense_kernel(K, N), host_target) is None  # no slmc.kernel attribute
    embedding = quantized_kernel(K, N).with_attr("slmc.kernel", "quantized_embedding")
    assert _schedule(embedding, host_target) is None


def test_declines_output_width_no_vector_divides(host_target):
    assert _schedule(quantized_kernel(K, 20), host_target) is None  # 20 channels: not a multiple of 16 lanes


TK, TN = 256, 192  # tiled cases: 3 tiles of 64 channels; 8 groups of 32 or 2 of 128


@pytest.mark.parametrize("bits,zeros,group,extras", [(4, False, 32, False), (4, True, 128, True), (8, False, 128, True),
                                                     (8, True, 32, False)],
                         ids=["int4-sym-g32", "int4-asym-g128-bias-scale", "int8-sym-g128-bias-scale", "int8-asym-g32"])
def test_tiled_kernel_streams_tiles_and_matches_numpy(bits, zeros, group, extras, host_target):
    width = linear_tile_width(TN)
    func = _schedule(quantized_kernel(TK, TN, bits, group, zeros=zeros, bias=extras, input_scale=extras, tile=width),
                     host_target)
    text = func.script()
    assert width == 64 and "if m == T.int64(1):" in text  # decode nest for one row, prefill nest for more
    # prefill: one chunk per contiguous tile; decode: 6 chunks of 32 channels, even on 2 cores (decode_chunk)
    assert "T.parallel(3)" in text and "T.parallel(6)" in text
    assert text.count("T.vectorized(64)") >= 3 and "T.vectorized(32)" in text  # prefill 4, decode 2 vectors of 16
    assert ("T.unroll(8)" in text) == (bits == 4)  # the 8 nibbles of one loaded word
    # decode: per-group dots and the accumulator in registers (global scope: on the stack), the prefill nests'
    # dots too; prefill: one [group, 64] block of unpacked codes per tile and group (computed under the group
    # loop), reused by every row
    allocated = set(re.findall(r"(\w+) = T.sblock_alloc_buffer", text))
    assert allocated == {"group_dot", "group_sum", "dequant_matmul_global", "unpacked_codes_local"} | (
        {"scaled_input", "dequant_matmul"} if extras else set())  # with a bias, prefill accumulates in a buffer
    assert re.search(rf'T.sblock\("unpacked_codes"\):\n.*\n\s+v_k = T.axis.spatial\({TK}, g \* {group} \+', text)
    rng = np.random.default_rng(1)
    codes, scales, zero = _packed_weights(rng, TK, TN, bits, group, zeros)
    bias = rng.standard_normal(TN).astype(np.float32)
    input_scale = (rng.random(TK) + 0.5).astype(np.float32)
    weight = dequantize(codes, scales, zero, bits, group)
    tables = [_tiled(t, width) for t in (word_codes(codes) if bits == 4 else codes, scales, zero) if t is not None]
    for rows in (1, 3, 128):
        x = rng.standard_normal((rows, TK)).astype(np.float32)
        got = run(func, host_target.tvm_target(), x, *tables, *([bias, input_scale] if extras else []), out_shape=(rows, TN))
        want = ((x * input_scale) if extras else x) @ weight + (bias if extras else 0.0)
        # the regrouped sum (int4: of 1 + code / 16) rounds differently: measured <= 3e-6 relative to the largest output
        np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max(), rtol=1e-5)


def test_tiled_kernel_on_narrow_simd_walks_tiles_in_slices(host_target):
    """128-bit vectors (4 lanes): a 64-channel tile is walked as 4 slices of 4 vectors, all parallel."""
    func = _schedule(quantized_kernel(64, 128, 4, 32, tile=64), host_target, CpuParams(vector_bits=128, cores=2))
    text = func.script()
    # decode, prefill's whole row blocks (split_rows) and its last rows
    assert text.count("T.parallel(8)") == 3 and "T.vectorized(16)" in text and "T.vectorized(64)" not in text
    _matches_numpy(func, host_target, 64, 128, 4, 32, rows=3, seed=2)


@pytest.mark.parametrize("rows", [ROW_BLOCK, 2 * ROW_BLOCK + 5])
def test_prefill_row_blocks_cover_whole_and_partial_blocks(rows, host_target):
    """Rows in blocks of ``ROW_BLOCK``: a whole number of blocks and a partial last block both match numpy."""
    func = _schedule(quantized_kernel(64, 128, 4, 32, tile=64), host_target)
    _matches_numpy(func, host_target, 64, 128, 4, 32, rows=rows, seed=7)


def test_tiled_kernel_folds_an_elementwise_epilogue_into_the_write_back(host_target):
    x = te.placeholder((te.var("m", "int64"), 64), "float32", "x")
    q, s = te.placeholder((2, 8, 64), "uint32", "q"), te.placeholder((2, 2, 64), "float16", "s")
    out = quantized_linear_te(x, q, s, None, None, None, 4, 32)
    relu = te.compute(out.shape, lambda m, n: te.max(out[m, n], te.const(0.0, "float32")), name="relu")
    func = _schedule(te.create_prim_func([x, q, s, relu]).with_attr(KERNEL_ATTR, "quantized_linear"), host_target)
    text = func.script()
    assert "T.max(dequant_matmul_global" in text  # decode: folded into the write-back of the accumulator
    _matches_numpy(func, host_target, 64, 128, 4, 32, rows=5, seed=3, epilogue=lambda y: np.maximum(y, 0))


def test_the_decode_nest_allocates_no_runtime_workspace(host_target, tmp_path):
    """One row: the per-group dots and the accumulator live on the stack (``STACK_SCOPE``), so the library
    calls no ``TVMBackendAllocWorkspace`` (a "local" buffer costs an allocate/free pair per chunk); the
    pointer the runtime fills at load time exists only in a library whose code calls it."""
    x = te.placeholder((1, 64), "float32", "x")
    q, s = te.placeholder((2, 8, 64), "uint32", "q"), te.placeholder((2, 2, 64), "float16", "s")
    out = quantized_linear_te(x, q, s, None, None, None, 4, 32)
    func = _schedule(te.create_prim_func([x, q, s, out]).with_attr(KERNEL_ATTR, "quantized_linear"), host_target)
    path = tmp_path / "decode.so"
    tvm.compile(tvm.IRModule({"main": func}), target=host_target.tvm_target()).export_library(str(path))
    library = ctypes.CDLL(str(path))
    ctypes.c_void_p.in_dll(library, "__TVMBackendParallelLaunch")  # the pointers are there for what the code calls
    with pytest.raises(ValueError):
        ctypes.c_void_p.in_dll(library, "__TVMBackendAllocWorkspace")
    _matches_numpy(func, host_target, 64, 128, 4, 32, rows=1, seed=6)


def test_the_prefill_nests_allocate_a_workspace_only_for_buffers_of_1_kb_or_more(host_target):
    """Dynamic rows (decode, the register-tiled row blocks, the tail block): the one-row group dots of the
    tail block (256 B) are ``STACK_SCOPE``; what stays a runtime workspace is the serial per-row group sum
    (size known at run time), the unpacked ``[group, 64]`` codes (8 KB) and the tiles' ``[4, 64]`` dots
    (1,024 B: TVM keeps only buffers *under* 1 KB on the stack), each once per chunk, not per group
    (576 -> 1536, 100 rows, one thread: 97 -> 73 allocations per call)."""
    sizes = workspace_allocation_bytes(_schedule(quantized_kernel(576, 1536, 4, 32, tile=64), host_target),
                                       host_target.tvm_target())
    assert 8192 in sizes and all(size is None or size >= 1024 for size in sizes)  # was also 256 ("local" dots)


def test_tile_width_is_the_widest_that_divides_the_outputs():
    assert [linear_tile_width(n) for n in (49152, 1536, 576, 192, 48, 20)] == [64, 64, 64, 64, 16, None]


def test_declines_tiled_kernel_whose_group_dots_feed_two_blocks(host_target):
    """A kernel of the tiled form that is not the converter's (its group dots also feed an output) is declined."""
    x = te.placeholder((te.var("m", "int64"), 64), "float32", "x")
    q, s = te.placeholder((2, 8, 64), "uint32", "q"), te.placeholder((2, 2, 64), "float16", "s")
    out = quantized_linear_te(x, q, s, None, None, None, 4, 32)
    dots = out.op.input_tensors[0] if out.op.input_tensors[0].op.name == "group_dot" else out.op.input_tensors[1]
    copy = te.compute(dots.shape, lambda m, n, g: dots[m, n, g] * 2.0, name="copy")
    func = te.create_prim_func([x, q, s, out, copy]).with_attr(KERNEL_ATTR, "quantized_linear")
    assert _schedule(func, host_target) is None


@pytest.mark.parametrize("rows", [1, 8])
def test_tiled_kernel_with_a_static_row_count_gets_one_nest(rows, host_target):
    x = te.placeholder((rows, 64), "float32", "x")
    q, s = te.placeholder((2, 8, 64), "uint32", "q"), te.placeholder((2, 2, 64), "float16", "s")
    out = quantized_linear_te(x, q, s, None, None, None, 4, 32)
    func = _schedule(te.create_prim_func([x, q, s, out]).with_attr(KERNEL_ATTR, "quantized_linear"), host_target)
    text = func.script()
    assert "if " not in text and ("unpacked_codes_local" in text) == (rows > 1)
    _matches_numpy(func, host_target, 64, 128, 4, 32, rows=rows, seed=4)


def test_per_channel_scales_on_a_wide_input_keep_the_decode_nest_for_every_row_count(host_target):
    """int8 per output channel, K = 1536: an unpacked [1536, 64] float block (384 KiB) would exceed the
    prefill nest's SHARED_BLOCK_BYTES, so every row count takes the decode nest (codes unpacked where used)."""
    func = _schedule(quantized_kernel(1536, 64, 8, 1536, tile=64), host_target)
    text = func.script()
    assert "if " not in text and "unpacked_codes" not in text and "dequant_matmul_global" in text
    _matches_numpy(func, host_target, 1536, 64, 8, 1536, rows=6, seed=5)


def test_decode_chunks_leave_no_core_idle_where_a_narrower_slice_of_the_tile_avoids_it():
    """2 cores, AVX-512: 576->192 and 576->576 in 32-channel chunks (6 and 18: even), the rest in whole tiles."""
    two, one = AVX512_2CORES, CpuParams(vector_bits=512, cores=1)
    assert [decode_chunk(n, 64, 64, two) for n in (192, 576, 1536, 49152, 128)] == [32, 32, 64, 64, 64]
    assert [decode_chunk(n, 64, 64, one) for n in (192, 576)] == [64, 64]  # one core: nothing to balance
    assert decode_chunk(None, 64, 64, two) == 64 and decode_chunk(48, 16, 16, two) == 16


def test_decode_nest_of_a_narrow_projection_runs_six_chunks_on_two_cores(host_target):
    func = _schedule(quantized_kernel(TK, TN, 4, 32, tile=64), host_target)
    decode, prefill = func.script().split("else:", 1)
    assert "T.parallel(6)" in decode and "T.vectorized(32)" in decode  # 2 vectors of 16 lanes per chunk
    assert "T.parallel(3)" in prefill  # prefill keeps whole tiles (its unpacked block is shared by the rows)
    _matches_numpy(func, host_target, TK, TN, 4, 32, rows=1, seed=6)


def _enclosing_loops(lines: list[str], index: int) -> list[str]:
    """The ``for`` headers enclosing line ``index`` of a TVMScript text (by indentation)."""
    loops, indent = [], len(lines[index]) - len(lines[index].lstrip())
    for line in reversed(lines[:index]):
        depth = len(line) - len(line.lstrip())
        if line.strip() and depth < indent:
            indent = depth
            if line.lstrip().startswith("for "):
                loops.append(line.strip())
    return loops


def test_prefill_nest_reads_each_packed_tile_once_per_row_block(host_target):
    """Whole row blocks (split_rows): the codes are unpacked under one loop over the blocks, every other
    loop static; the last ``M mod ROW_BLOCK`` rows are one block (static loops only)."""
    func = _schedule(quantized_kernel(TK, TN, 4, 32, tile=linear_tile_width(TN)), host_target)
    prefill = func.script().split("if m == T.int64(1):", 1)[1].split("\n    else:", 1)[1]
    blocks, tail = prefill.split("tail_rows: T.let", 1)
    constant = re.compile(r"for .* in (range|T\.unroll|T\.vectorized|T\.parallel)\((T\.int64\()?\d+\)?\):")
    row_blocks = re.compile(r"for \w+ in range\(row_blocks\):")
    for part, block_loops in ((blocks, 1), (tail, 0)):
        lines = part.splitlines()
        reads = [i for i, line in enumerate(lines) if re.search(r"\bq(_\d+)?\[", line) and "T.reads" not in line]
        assert reads  # the packed codes are read in the unpacking block only: under tile, (row block,) group and K loops
        for index in reads:
            loops = _enclosing_loops(lines, index)
            assert [bool(row_blocks.fullmatch(loop)) for loop in loops].count(True) == block_loops, lines[index]
            assert all(constant.fullmatch(loop) or row_blocks.fullmatch(loop) for loop in loops), lines[index]


def test_whole_row_blocks_go_through_an_unguarded_register_tile(host_target):
    """The whole blocks' part: a 4-row register tile (AVX-512: 4 rows x 4 vectors of accumulators),
    rows unrolled inside the group's input loop, and no bounds check anywhere in it."""
    func = _schedule(quantized_kernel(TK, TN, 4, 32, tile=linear_tile_width(TN)), host_target)
    blocks = func.script().split("row_blocks: T.let", 1)[1].split("tail_rows: T.let", 1)[0]
    assert "T.where" not in blocks
    dots = blocks.split('T.sblock("group_dot_update")', 1)[0].splitlines()
    assert [line.strip() for line in dots[-4:-1]] == ["for ax2_1 in T.unroll(8):", "for ax0 in T.unroll(T.int64(4)):",
                                                    "for ax1 in T.vectorized(64):"]


@pytest.mark.parametrize("rows", [5, ROW_BLOCK + 5])
def test_prefill_tail_rows_with_a_folded_epilogue_match_numpy(rows, host_target):
    """The last rows alone, and whole blocks + last rows, through a kernel with an elementwise epilogue
    (the tail's buffers are views at row ``M - M mod ROW_BLOCK``)."""
    x = te.placeholder((te.var("m", "int64"), 64), "float32", "x")
    q, s = te.placeholder((2, 8, 64), "uint32", "q"), te.placeholder((2, 2, 64), "float16", "s")
    out = quantized_linear_te(x, q, s, None, None, None, 4, 32)
    relu = te.compute(out.shape, lambda m, n: te.max(out[m, n], te.const(0.0, "float32")), name="relu")
    func = _schedule(te.create_prim_func([x, q, s, relu]).with_attr(KERNEL_ATTR, "quantized_linear"), host_target)
    _matches_numpy(func, host_target, 64, 128, 4, 32, rows=rows, seed=8, epilogue=lambda y: np.maximum(y, 0))


def test_decode_nest_prefetches_the_codes_of_a_group_two_kilobytes_ahead(host_target):
    """int4 g32, 64-channel chunks: a group's codes are 4 rows of 64 words (1 KiB, 16 lines), so each group's
    iteration prefetches the 16 lines of the group 2 ahead; the prefill nest (codes shared by rows) prefetches none."""
    func = _schedule(quantized_kernel(TK, 1536, 4, 32, tile=64), host_target)
    decode, prefill = func.script().split("else:", 1)
    calls = re.findall(r'T.call_llvm_intrin\("void", "llvm.prefetch[.p0]*", T.address_of\(q\[(.*?)\]\)', decode)
    assert len(calls) == 16 and "prefetch" not in prefill
    assert calls[0] == "n_0_n_1_fused, (g + 2) * 4, 0" and calls[-1] == "n_0_n_1_fused, (g + 2) * 4 + 3, 48"
    _matches_numpy(func, host_target, TK, 1536, 4, 32, rows=1, seed=8)


def test_decode_nest_of_half_tile_chunks_prefetches_its_own_half(host_target):
    """32-channel chunks of 64-wide tiles (576->192 on 2 cores): the chunk's half of each row, 2 lines per row."""
    text = _schedule(quantized_kernel(TK, TN, 4, 32, tile=64), host_target).script().split("else:", 1)[0]
    calls = re.findall(r"T.address_of\(q\[(.*?)\]\)", text)
    assert len(calls) == 8 and calls[1] == "n_0_n_1_fused // 2, (g + 4) * 4, n_0_n_1_fused % 2 * 32 + 16"


def test_per_channel_groups_get_no_software_prefetch(host_target):
    """One group of 1536 int8 rows per chunk: more lines than PREFETCH_LINES, hardware prefetch only."""
    assert "prefetch" not in _schedule(quantized_kernel(1536, 64, 8, 1536, tile=64), host_target).script()
