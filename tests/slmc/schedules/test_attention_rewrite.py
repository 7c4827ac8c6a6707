"""attention_rewrite: attention matmuls read the KV cache in place (slmc.schedules.attention_rewrite)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax, tirx

from slmc.schedules.attention_rewrite import attention_rewrite

HEADS, DEPTH = 4, 8


def attention_module(kv_heads: int, expand_axis: int = 2, transpose_axes=(0, 1, 3, 2)) -> tvm.IRModule:
    """``softmax(Q K^T) V`` as TVM imports Hugging Face attention: ``repeat_kv`` (expand_dims,
    broadcast_to, reshape; absent when ``kv_heads == HEADS``), identity ``broadcast_to`` + ``reshape``
    to 3-D, batched ``matmul``. ``expand_axis`` / ``transpose_axes`` change the chain (negative tests)."""
    rows, keys = tirx.Var("m", "int64"), tirx.Var("n", "int64")
    group = HEADS // kv_heads
    bb = relax.BlockBuilder()
    q = relax.Var("q", relax.TensorType([1, HEADS, rows, DEPTH], "float32"))
    k = relax.Var("k", relax.TensorType([1, kv_heads, keys, DEPTH], "float32"))
    v = relax.Var("v", relax.TensorType([1, kv_heads, keys, DEPTH], "float32"))

    def repeat(x):
        if group == 1:
            return x
        wide = [1, kv_heads, group, keys, DEPTH]
        return bb.emit(relax.op.reshape(bb.emit(relax.op.broadcast_to(
            bb.emit(relax.op.expand_dims(x, [expand_axis])), wide)), [1, HEADS, keys, DEPTH]))

    def to_3d(x, shape):
        return bb.emit(relax.op.reshape(bb.emit(relax.op.broadcast_to(x, [1, *shape])), shape))

    with bb.function("main", [q, k, v]):
        with bb.dataflow():
            keys_t = bb.emit(relax.op.permute_dims(repeat(k), list(transpose_axes)))
            scores = bb.emit(relax.op.matmul(to_3d(q, [HEADS, rows, DEPTH]), to_3d(keys_t, [HEADS, DEPTH, keys])))
            probs = bb.emit(relax.op.nn.softmax(scores, axis=-1))
            out = bb.emit_output(relax.op.matmul(probs, to_3d(repeat(v), [HEADS, keys, DEPTH])))
        bb.emit_func_output(out)
    return bb.get()


def _run(mod, q, k, v):
    vm = relax.VirtualMachine(tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in (q, k, v)]).numpy()


def _calls(mod, name):
    return mod.script().count(name)


@pytest.mark.parametrize("kv_heads", [2, 4])  # grouped (g = 2) and plain multi-head attention
def test_rewrite_reads_the_cache_in_place_and_computes_the_same(kv_heads):
    mod = attention_module(kv_heads)
    rewritten = attention_rewrite(mod)
    assert _calls(rewritten, "R.call_tir(cls.attention_scores") == 1 and _calls(rewritten, "R.call_tir(cls.attention_values") == 1
    assert _calls(rewritten, "R.matmul") == 0 and _calls(rewritten, "R.expand_dims") == 0
    assert _calls(rewritten, "R.permute_dims") == 0  # no transposed copy of K
    kernels = [f for gv, f in rewritten.functions.items() if gv.name_hint.startswith("attention_")]
    assert {str(f.attrs["slmc.kernel"]) for f in kernels} == {"attention_scores", "attention_values"}
    rng = np.random.default_rng(kv_heads)
    for rows, keys in ((1, 1), (1, 9), (7, 7), (3, 12)):
        q = rng.standard_normal((1, HEADS, rows, DEPTH)).astype(np.float32)
        k = rng.standard_normal((1, kv_heads, keys, DEPTH)).astype(np.float32)
        v = rng.standard_normal((1, kv_heads, keys, DEPTH)).astype(np.float32)
        np.testing.assert_allclose(_run(rewritten, q, k, v), _run(mod, q, k, v), atol=1e-6, rtol=1e-6)


def plain_batched_matmul() -> tvm.IRModule:
    """``[H, m, D] x [H, D, n]`` on function inputs: no cache layout to read instead."""
    rows, keys = tirx.Var("m", "int64"), tirx.Var("n", "int64")
    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType([HEADS, rows, DEPTH], "float32"))
    b = relax.Var("b", relax.TensorType([HEADS, DEPTH, keys], "float32"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(a, b))
        bb.emit_func_output(out)
    return bb.get()


def test_other_chains_are_left_as_they_are():
    not_a_head_repeat = attention_module(2, expand_axis=1)
    assert _calls(attention_rewrite(not_a_head_repeat), "R.call_tir(cls.attention_scores") == 0
    for mod in (not_a_head_repeat, plain_batched_matmul()):
        assert attention_rewrite(mod).same_as(mod)  # nothing matched: the module itself


@pytest.mark.slow  # ~20 s: a fixture-lm compile
def test_fixture_lm_compiles_with_the_rewrite_and_verifies(tmp_path):
    """End to end: every attention matmul of fixture-lm (8 query heads, 4 KV heads) is rewritten and
    scheduled by slmc's attention rules, and the artifact verifies against eager (prefill and decode)."""
    import slmc

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("passes: []\nverify: {num_samples: 2, atol: 1.0e-4}\n")
    result = slmc.compile("fixture-lm", str(recipe), "host", tmp_path / "out")
    assert result.manifest.verification.passed
    summary = next(note for note in result.manifest.lowering_notes if note.startswith("CPU schedules:"))
    # main's kernel is shared by the 4 layers; the resident functions (slmc.schedules.resident_kv) compute each
    # layer's attention in one tiled kernel (slmc.schedules.flash_rewrite), scheduled when it is built
    assert "AttentionScores 1" in summary and "AttentionValues 1" in summary
    assert any(note.startswith("attention: one tiled kernel per layer") for note in result.manifest.lowering_notes)
