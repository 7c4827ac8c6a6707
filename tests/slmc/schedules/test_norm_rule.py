"""RowReduction: softmax, RMSNorm and LayerNorm kernels one row at a time (slmc.schedules.norms)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from schedule_helpers import AVX512_2CORES, dense_kernel, quantized_kernel
from tvm import te, tirx, topi

from slmc.schedules.norms import RowReduction

WIDTH, HEADS = 64, 9


def _i64(value: int) -> tirx.IntImm:
    return tirx.const(value, "int64")


def rms_norm_kernel() -> tirx.PrimFunc:
    """``x / sqrt(mean(x^2) + eps) * w`` over ``[1, T, WIDTH]`` as LegalizeOps + FuseOps build it
    (keepdims ``[1, T, 1]`` statistics, then two elementwise multiplies)."""
    x = te.placeholder((_i64(1), tirx.Var("t", "int64"), _i64(WIDTH)), "float32", "x")
    w = te.placeholder((_i64(WIDTH),), "float32", "w")
    mean = topi.divide(topi.sum(topi.multiply(x, x), axis=-1, keepdims=True), tirx.const(WIDTH, "float32"))
    scale = topi.rsqrt(topi.add(mean, tirx.const(1e-5, "float32")))
    out = topi.multiply(w, topi.multiply(x, scale))
    return te.create_prim_func([x, w, out])


def softmax_kernel(rows=None, keys=None) -> tirx.PrimFunc:
    rows = _i64(rows) if rows else tirx.Var("t", "int64")
    keys = _i64(keys) if keys else tirx.Var("n", "int64")
    x = te.placeholder((_i64(1), _i64(HEADS), rows, keys), "float32", "x")
    return te.create_prim_func([x, topi.nn.softmax(x, axis=-1)])


def layer_norm_kernel() -> tirx.PrimFunc:
    x = te.placeholder((_i64(1), tirx.Var("t", "int64"), _i64(WIDTH)), "float32", "x")
    g, b = te.placeholder((_i64(WIDTH),), "float32", "g"), te.placeholder((_i64(WIDTH),), "float32", "b")
    return te.create_prim_func([x, g, b, topi.nn.layer_norm(x, g, b, axis=[-1], epsilon=1e-5)])


def _schedule(func, host_target):
    sch = RowReduction(AVX512_2CORES).apply(func, host_target.tvm_target(), False)
    return None if sch is None else sch.mod["main"]


def _run(func, target, inputs, out_shape):
    lib = tvm.compile(tvm.IRModule({"main": func}), target=target)
    out = tvm.runtime.tensor(np.zeros(out_shape, "float32"))
    lib["main"](*[tvm.runtime.tensor(a) for a in inputs], out)
    return out.numpy()


@pytest.mark.parametrize("tokens", [1, 7, 129])
def test_norms_reduce_in_vectors_and_match_numpy(host_target, tokens):
    rng = np.random.default_rng(tokens)
    x = rng.standard_normal((1, tokens, WIDTH)).astype(np.float32)
    g, b = rng.standard_normal(WIDTH).astype(np.float32), rng.standard_normal(WIDTH).astype(np.float32)
    rms = _schedule(rms_norm_kernel(), host_target)
    layer = _schedule(layer_norm_kernel(), host_target)
    for func in (rms, layer):
        text = func.script()
        assert "_rf" in text and "T.vectorized(T.int64(16))" in text  # vector partial sums, vector elementwise
        assert "T.parallel(" not in text  # a norm's rows are dynamic: no parallel launch for one token
    expected_rms = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * g
    np.testing.assert_allclose(_run(rms, host_target.tvm_target(), [x, g], x.shape), expected_rms, atol=1e-5, rtol=1e-5)
    centered = x - x.mean(-1, keepdims=True)
    expected_layer = centered / np.sqrt((centered ** 2).mean(-1, keepdims=True) + 1e-5) * g + b
    np.testing.assert_allclose(_run(layer, host_target.tvm_target(), [x, g, b], x.shape), expected_layer,
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tokens,keys", [(1, 1), (1, 129), (7, 8), (3, 129)])
def test_softmax_runs_row_by_row_and_matches_numpy(host_target, tokens, keys):
    func = _schedule(softmax_kernel(), host_target)
    text = func.script()
    assert "T.parallel(" not in text and "T.vectorized(" not in text  # dynamic lengths: no launch, no guarded vectors
    rng = np.random.default_rng(keys)
    x = rng.standard_normal((1, HEADS, tokens, keys)).astype(np.float32)
    x[..., 0] = -np.inf  # the masked sink slot, as in every causal step
    x[..., -1] = np.maximum(x[..., -1], 0.0)  # keeps a finite entry in every row
    expected = np.exp(x - x.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(_run(func, host_target.tvm_target(), [x], x.shape), expected, atol=1e-6, rtol=1e-5)


def test_static_softmax_rows_run_in_parallel(host_target):
    func = _schedule(softmax_kernel(rows=32, keys=64), host_target)  # 9 x 32 x 64 >= MIN_PARALLEL_WORK
    assert "T.parallel(" in func.script() and "T.vectorized(T.int64(16))" in func.script()
    x = np.random.default_rng(0).standard_normal((1, HEADS, 32, 64)).astype(np.float32)
    expected = np.exp(x - x.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(_run(func, host_target.tvm_target(), [x], x.shape), expected, atol=1e-6, rtol=1e-5)


def test_declines_kernels_that_are_not_row_reductions(host_target):
    t = tirx.Var("t", "int64")
    x = te.placeholder((t, _i64(WIDTH)), "float32", "x")
    elementwise = te.create_prim_func([x, topi.exp(x)])
    column = te.create_prim_func([x, topi.subtract(x, topi.sum(x, axis=0, keepdims=True))])  # over the tokens
    total = te.create_prim_func([x, topi.sum(x)])  # ends in a reduction
    marked = rms_norm_kernel().with_attr("slmc.kernel", "quantized_linear")
    for func in (elementwise, column, total, marked, dense_kernel(64, 64), quantized_kernel(64, 48)):
        assert _schedule(func, host_target) is None
