"""slmc.backend.relax_pipeline: legalization overrides for TVM 0.27 bugs, scheduled builds."""

import numpy as np
import pytest
import tvm
from tvm import relax

from slmc.backend.relax_pipeline import build_pipeline
from slmc.spec.target import load_target

HOST = load_target("host")


@pytest.mark.parametrize("fill", [float("-inf"), 2.5])
def test_legalize_overrides_handle_infinite_full(fill):
    n = tvm.tirx.Var("n", "int64")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, n), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            value = relax.const(fill, "float32")
            full = bb.emit(relax.op.full(relax.ShapeExpr([2, n]), value, "float32"))
            full_like = bb.emit(relax.op.full_like(x, value))
            out = bb.emit_output(relax.op.add(full, full_like))
        bb.emit_func_output(out)
    ex = tvm.compile(bb.get(), target=HOST.tvm_target(), relax_pipeline=build_pipeline(HOST, HOST.tvm_target()))

    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(np.ones((2, 3), "float32")))

    np.testing.assert_array_equal(got.numpy(), np.full((2, 3), 2 * fill, "float32"))
