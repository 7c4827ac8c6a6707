"""Fallback: parallel outer loop and vectorized inner loop for kernels no other rule took."""

from __future__ import annotations

import numpy as np
import pytest
from schedule_helpers import AVX512_2CORES, rows_var, run
from tvm import te

from slmc.schedules.fallback import MIN_PARALLEL_WORK, Fallback


def _schedule(func, host_target):
    sch = Fallback(AVX512_2CORES).apply(func, host_target.tvm_target(), False)
    return None if sch is None else sch.mod["main"]


def _affine(shape):
    a = te.placeholder(shape, "float32", "a")
    return te.create_prim_func([a, te.compute(a.shape, lambda i, j: a[i, j] * 2.0 + 1.0, name="affine")])


@pytest.mark.parametrize("rows,width,parallel", [(64, 512, True), (None, 48, False)], ids=["large", "one-token"])
def test_elementwise_kernel_is_vectorized_and_parallel_when_large(rows, width, parallel, host_target):
    func = _schedule(_affine((rows or rows_var(), width)), host_target)
    text = func.script()
    assert "T.vectorized(16)" in text and ("T.parallel(" in text) == parallel
    assert (64 * 512 >= MIN_PARALLEL_WORK) and (48 < MIN_PARALLEL_WORK)
    x = np.random.default_rng(0).standard_normal((rows or 3, width)).astype(np.float32)
    np.testing.assert_allclose(run(func, host_target.tvm_target(), x, out_shape=x.shape), x * 2 + 1, rtol=1e-6)


def test_reduction_gets_its_spatial_loops_parallel(host_target):
    a = te.placeholder((256, 128), "float32", "a")
    r = te.reduce_axis((0, 128), "r")
    total = te.compute((256,), lambda i: te.sum(a[i, r], axis=r), name="row_sum")
    func = _schedule(te.create_prim_func([a, total]), host_target)
    assert "T.parallel(" in func.script() and "T.vectorized(" not in func.script()
    x = np.random.default_rng(1).standard_normal((256, 128)).astype(np.float32)
    np.testing.assert_allclose(run(func, host_target.tvm_target(), x, out_shape=(256,)), x.sum(1), rtol=1e-5, atol=1e-4)


def test_declines_small_kernels_it_cannot_vectorize(host_target):
    assert _schedule(_affine((rows_var(), 37)), host_target) is None  # 37: no whole vector, too little work
    a = te.placeholder((64,), "float32", "a")
    r = te.reduce_axis((0, 64), "r")
    total = te.compute((1,), lambda _: te.sum(a[r], axis=r), name="total")
    assert _schedule(te.create_prim_func([a, total]), host_target) is None
