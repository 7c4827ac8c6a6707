"""QuantizedMatmul: slmc's quantized linear kernels, scheduled on the host (slmc.schedules.quantized_matmul)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from schedule_helpers import AVX512_2CORES, dense_kernel, dequantize, quantized_kernel, run

from slmc.schedules.quantized_matmul import QuantizedMatmul

K, N = 64, 48


def _schedule(func, host_target):
    sch = QuantizedMatmul(AVX512_2CORES).apply(func, host_target.tvm_target(), False)
    return None if sch is None else sch.mod["main"]


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
