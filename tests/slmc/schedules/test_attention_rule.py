"""AttentionScores / AttentionValues: attention's kernels on the KV cache layout (slmc.schedules.attention)."""

from __future__ import annotations

import numpy as np
import pytest
from schedule_helpers import AVX512_2CORES, dense_kernel, quantized_kernel, workspace_allocation_sites
from tvm import te, tirx

import tvm
from slmc.schedules.attention import AttentionScores, AttentionValues
from slmc.schedules.attention_rewrite import SCORES, VALUES, scores_te, values_te
from slmc.schedules.row_matmul import CpuParams
from slmc.schedules.rule import KERNEL_ATTR

HEADS, KV_HEADS, DEPTH = 9, 3, 64  # SmolLM-135M's attention


def _i64(value: int) -> tirx.IntImm:
    return tirx.const(value, "int64")  # sizes as the Relax pipeline writes them


def scores_kernel(heads=HEADS, kv_heads=KV_HEADS, depth=DEPTH, kind=SCORES, rows=None):
    rows, keys = _i64(rows) if rows else tirx.Var("m", "int64"), tirx.Var("n", "int64")
    q = te.placeholder((_i64(heads), rows, _i64(depth)), "float32", "q")
    k = te.placeholder((_i64(1), _i64(kv_heads), keys, _i64(depth)), "float32", "k")
    func = te.create_prim_func([q, k, scores_te(q, k, heads // kv_heads)])
    return func.with_attr(KERNEL_ATTR, kind) if kind else func


def values_kernel(heads=HEADS, kv_heads=KV_HEADS, depth=DEPTH, kind=VALUES, rows=None):
    rows, keys = _i64(rows) if rows else tirx.Var("m", "int64"), tirx.Var("n", "int64")
    p = te.placeholder((_i64(heads), rows, keys), "float32", "p")
    v = te.placeholder((_i64(1), _i64(kv_heads), keys, _i64(depth)), "float32", "v")
    func = te.create_prim_func([p, v, values_te(p, v, heads // kv_heads)])
    return func.with_attr(KERNEL_ATTR, kind) if kind else func


def _schedule(rule_class, func, host_target, params=AVX512_2CORES):
    sch = rule_class(params).apply(func, host_target.tvm_target(), False)
    return None if sch is None else sch.mod["main"]


def _run(func, target, left, right, out_shape):
    lib = tvm.compile(tvm.IRModule({"main": func}), target=target)
    out = tvm.runtime.tensor(np.zeros(out_shape, "float32"))
    lib["main"](tvm.runtime.tensor(left), tvm.runtime.tensor(right), out)
    return out.numpy()


def _assert_serial_decode_parallel_prefill(text: str) -> None:
    """Dynamic rows: ``if m == 1`` a serial nest (decode), else (prefill) one parallel over (head, row)."""
    decode, prefill = text.split("else:", 1)
    assert "if m == T.int64(1):" in decode and "T.parallel(" not in decode
    assert prefill.count("T.parallel(") == 1


@pytest.mark.parametrize("rows,keys", [(1, 1), (1, 129), (7, 7), (3, 129)])
def test_scores_are_vectorized_and_match_numpy(host_target, rows, keys):
    func = _schedule(AttentionScores, scores_kernel(), host_target)
    text = func.script()
    assert "T.vectorized(T.int64(16))" in text and "_rf" in text  # 512-bit vector partial sums along the head size
    _assert_serial_decode_parallel_prefill(text)
    rng = np.random.default_rng(rows * 1000 + keys)
    q = rng.standard_normal((HEADS, rows, DEPTH)).astype(np.float32)
    k = rng.standard_normal((1, KV_HEADS, keys, DEPTH)).astype(np.float32)
    expected = np.einsum("hmd,hnd->hmn", q, np.repeat(k[0], HEADS // KV_HEADS, axis=0))  # repeat_kv
    got = _run(func, host_target.tvm_target(), q, k, (HEADS, rows, keys))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("rows,keys", [(1, 1), (1, 129), (7, 7), (3, 129)])
def test_values_are_vectorized_and_match_numpy(host_target, rows, keys):
    func = _schedule(AttentionValues, values_kernel(), host_target)
    text = func.script()
    assert "T.vectorized(T.int64(16))" in text and "T.unroll(T.int64(4))" in text
    _assert_serial_decode_parallel_prefill(text)
    rng = np.random.default_rng(rows * 1000 + keys)
    p = rng.random((HEADS, rows, keys)).astype(np.float32)
    v = rng.standard_normal((1, KV_HEADS, keys, DEPTH)).astype(np.float32)
    expected = np.einsum("hmn,hnd->hmd", p, np.repeat(v[0], HEADS // KV_HEADS, axis=0))
    got = _run(func, host_target.tvm_target(), p, v, (HEADS, rows, DEPTH))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-5)


def test_heads_times_rows_run_in_parallel_with_enough_static_work(host_target):
    """Static query rows (64: 9 x 64 x 64 >= MIN_PARALLEL_WORK): the (head, row) loop is parallel."""
    rng = np.random.default_rng(0)
    q = rng.standard_normal((HEADS, 64, DEPTH)).astype(np.float32)
    k = rng.standard_normal((1, KV_HEADS, 5, DEPTH)).astype(np.float32)
    p = rng.random((HEADS, 64, 5)).astype(np.float32)
    kv = np.repeat(k[0], HEADS // KV_HEADS, axis=0)
    for rule, func, left, expected in ((AttentionScores, scores_kernel(rows=64), q, np.einsum("hmd,hnd->hmn", q, kv)),
                                       (AttentionValues, values_kernel(rows=64), p, np.einsum("hmn,hnd->hmd", p, kv))):
        scheduled = _schedule(rule, func, host_target)
        assert "T.parallel(" in scheduled.script()
        got = _run(scheduled, host_target.tvm_target(), left, k, expected.shape)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-5)


def test_vector_width_comes_from_the_descriptor(host_target):
    neon = CpuParams(vector_bits=128, cores=4)
    assert "T.vectorized(T.int64(4))" in _schedule(AttentionScores, scores_kernel(8, 8, 32), host_target, neon).script()
    assert "T.vectorized(T.int64(4))" in _schedule(AttentionValues, values_kernel(8, 8, 32), host_target, neon).script()


def test_rules_decline_other_kernels(host_target):
    for rule in (AttentionScores, AttentionValues):
        assert _schedule(rule, scores_kernel(kind=None), host_target) is None  # unmarked batched matmul
        assert _schedule(rule, values_kernel(kind=None), host_target) is None
        assert _schedule(rule, dense_kernel(64, 64), host_target) is None
        assert _schedule(rule, quantized_kernel(64, 48), host_target) is None
    assert _schedule(AttentionScores, values_kernel(), host_target) is None  # the other kind
    assert _schedule(AttentionValues, scores_kernel(), host_target) is None
    rows, keys = tirx.Var("m", "int64"), tirx.Var("n", "int64")  # a scale fused after the scores: two blocks
    q = te.placeholder((_i64(HEADS), rows, _i64(DEPTH)), "float32", "q")
    k = te.placeholder((_i64(1), _i64(KV_HEADS), keys, _i64(DEPTH)), "float32", "k")
    scaled = te.compute((_i64(HEADS), rows, keys), lambda h, i, j: scores_te(q, k, 3)[h, i, j] * 0.125, name="scale")
    assert _schedule(AttentionScores, te.create_prim_func([q, k, scaled]).with_attr(KERNEL_ATTR, SCORES), host_target) is None
    # a head size that is not whole vectors (24 floats, 16 lanes): left to the fallback
    assert _schedule(AttentionScores, scores_kernel(4, 2, 24), host_target) is None
    assert _schedule(AttentionValues, values_kernel(4, 2, 24), host_target) is None


@pytest.mark.parametrize("rule_class,kernel", [(AttentionScores, scores_kernel), (AttentionValues, values_kernel)],
                         ids=["scores", "values"])
def test_decode_and_prefill_nests_allocate_no_runtime_workspace(host_target, rule_class, kernel):
    """The per-score partial sums and a row's accumulator are ``STACK_SCOPE`` buffers (64 and 256 bytes
    here): no ``TVMBackendAllocWorkspace`` per (head, row) in either nest (with ``"local"``: 3 sites)."""
    assert workspace_allocation_sites(_schedule(rule_class, kernel(), host_target), host_target.tvm_target()) == 0
