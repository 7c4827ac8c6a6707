"""DenseMatmul: float matmuls on prepacked [K, N] weights (slmc.schedules.dense_matmul)."""

from __future__ import annotations

import numpy as np
from schedule_helpers import AVX512_2CORES, dense_kernel, quantized_kernel, run
from tvm import te

from slmc.schedules.dense_matmul import DenseMatmul
from slmc.schedules.row_matmul import CpuParams, chunk_width


def _schedule(func, host_target, params=AVX512_2CORES):
    sch = DenseMatmul(params).apply(func, host_target.tvm_target(), False)
    return None if sch is None else sch.mod["main"]


def test_matmul_is_parallel_vectorized_and_matches_numpy(host_target):
    func = _schedule(dense_kernel(96, 128), host_target)
    text = func.script()
    assert "T.parallel(" in text and "T.vectorized(32)" in text and "T.unroll(T.int64(4))" in text  # 4-row blocks
    rng = np.random.default_rng(0)
    w = rng.standard_normal((96, 128)).astype(np.float32)
    for rows in (1, 6, 8):  # 6: the last row block is partial
        x = rng.standard_normal((rows, 96)).astype(np.float32)
        np.testing.assert_allclose(run(func, host_target.tvm_target(), x, w, out_shape=(rows, 128)), x @ w,
                                   atol=1e-4, rtol=1e-5)


def test_vector_width_comes_from_the_descriptor(host_target):
    neon = _schedule(dense_kernel(32, 64), host_target, CpuParams(vector_bits=128, cores=4))
    assert "T.vectorized(8)" in neon.script() or "T.vectorized(4)" in neon.script()
    assert chunk_width(64, CpuParams(vector_bits=128, cores=4)) == 8  # 4 lanes; 8 chunks for 4 cores
    assert chunk_width(1536, AVX512_2CORES) == 64
    assert chunk_width(20, AVX512_2CORES) is None


def test_declines_transposed_weights_batched_and_quantized_kernels(host_target):
    assert _schedule(dense_kernel(32, 64, weight_k_by_n=False), host_target) is None  # W read [n, k]
    assert _schedule(quantized_kernel(64, 48), host_target) is None  # slmc.kernel: another rule's
    a = te.placeholder((8, 4, 32), "float32", "a")
    b = te.placeholder((8, 32, 64), "float32", "b")
    r = te.reduce_axis((0, 32), "k")
    batched = te.compute((8, 4, 64), lambda h, i, j: te.sum(a[h, i, r] * b[h, r, j], axis=r), name="matmul")
    assert _schedule(te.create_prim_func([a, b, batched]), host_target) is None


def test_declines_a_consumer_of_another_shape(host_target):
    """A slice fused after the matmul (its columns padded to whole vectors) is no epilogue of the chunk
    loop: scheduled as one, its vectorized write-back ran past the output (heap corruption)."""
    from schedule_helpers import rows_var

    x = te.placeholder((rows_var(), 64), "float32", "x")
    w = te.placeholder((64, 80), "float32", "w")
    r = te.reduce_axis((0, 64), "k")
    y = te.compute((x.shape[0], 80), lambda i, j: te.sum(x[i, r] * w[r, j], axis=r), name="matmul")
    sliced = te.compute((x.shape[0], 77), lambda i, j: y[i, j], name="slice")
    assert _schedule(te.create_prim_func([x, w, sliced]), host_target) is None
