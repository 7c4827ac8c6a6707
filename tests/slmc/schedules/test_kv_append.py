"""The KV-cache append rewrite (slmc.schedules.kv_append): structure, exactness, and what it leaves alone."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from slmc.schedules.kv_append import KIND, kv_append

LAYERS, HEADS, DIM = 3, 2, 16


def _module(layer_index, axis: int = 2) -> tvm.IRModule:
    """main(stacked [L, 1, H, P, D], new [1, H, T, D]) = concat((take(stacked, layer, 0), new), axis)."""
    past, tokens = tvm.tirx.Var("p", "int64"), tvm.tirx.Var("t", "int64")
    stacked = relax.Var("stacked", relax.TensorType([LAYERS, 1, HEADS, past, DIM], "float32"))
    new = relax.Var("new", relax.TensorType([1, HEADS, tokens, DIM], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [stacked, new]):
        with bb.dataflow():
            index = relax.const(layer_index, "int64") if isinstance(layer_index, int) else layer_index
            layer = bb.emit(relax.op.take(stacked, index, axis=0))
            out = bb.emit_output(bb.emit(relax.op.concat([layer, new], axis=axis)))
        bb.emit_func_output(out)
    return bb.get()


def _kernels(mod: tvm.IRModule) -> list[str]:
    return [str(f.attrs["slmc.kernel"]) for _, f in mod.functions_items()
            if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and "slmc.kernel" in f.attrs]


@pytest.mark.parametrize("past, tokens", [(0, 5), (1, 1), (7, 1), (33, 3)])
def test_the_append_reads_the_stack_in_place_and_equals_the_concatenation(host_target, past, tokens):
    from slmc.backend.lowering import RelaxProgram, build

    rewritten = kv_append(_module(1))
    assert _kernels(rewritten) == [KIND]
    assert "R.take" not in rewritten["main"].script() and "R.concat" not in rewritten["main"].script()
    rng = np.random.default_rng(past)
    stacked = rng.standard_normal((LAYERS, 1, HEADS, past, DIM)).astype("float32")
    new = rng.standard_normal((1, HEADS, tokens, DIM)).astype("float32")
    vm = relax.VirtualMachine(build(RelaxProgram(rewritten, [], [], 2), host_target), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(stacked), tvm.runtime.tensor(new)).numpy()
    np.testing.assert_array_equal(got, np.concatenate([stacked[1], new], axis=2))  # a copy: bit-exact


@pytest.mark.parametrize("module", [lambda: _module(1, axis=3), lambda: _module(LAYERS), lambda: _module(-1)],
                         ids=["other axis", "layer out of range", "negative layer"])
def test_other_concatenations_are_left_as_they_are(module):
    original = module()
    tvm.ir.assert_structural_equal(kv_append(original), original)
