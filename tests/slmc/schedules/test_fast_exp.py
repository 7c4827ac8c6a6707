"""The vectorizable exp/sigmoid rewrite (slmc.schedules.fast_exp): accuracy, limits, what it leaves alone."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import s_tir, te

from slmc.schedules.fast_exp import fast_exp_pass


def _module(dtype: str = "float32", n: int = 4096) -> tvm.IRModule:
    a = te.placeholder((n,), dtype, name="A")
    e = te.compute((n,), lambda i: te.exp(a[i]), name="E")
    s = te.compute((n,), lambda i: te.sigmoid(a[i]), name="S")
    return tvm.IRModule({"main": te.create_prim_func([a, e, s])})


def _run(mod: tvm.IRModule, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sch = s_tir.Schedule(mod)
    for name in ("E", "S"):
        (loop,) = sch.get_loops(sch.get_sblock(name))
        sch.vectorize(sch.split(loop, [None, 16])[1])
    f = tvm.compile(sch.mod, target=tvm.target.Target({"kind": "llvm"}))
    outs = [tvm.runtime.tensor(np.zeros_like(x)) for _ in range(2)]
    f["main"](tvm.runtime.tensor(x), *outs)
    return outs[0].numpy(), outs[1].numpy()


def test_exp_and_sigmoid_are_within_two_roundings_of_float64():
    x = np.linspace(-87.3, 88.3, 1 << 16).astype("float32")
    mod = fast_exp_pass(_module(n=x.size))
    assert "T.exp" not in mod["main"].script() and "T.sigmoid" not in mod["main"].script()
    exp, sigmoid = _run(mod, x)
    wide = x.astype(np.float64)
    assert np.max(np.abs(exp - np.exp(wide)) / np.exp(wide)) < 2e-7  # measured 7.7e-8
    reference = 1 / (1 + np.exp(-wide))
    assert np.max(np.abs(sigmoid - reference) / reference) < 2e-7  # measured 1.2e-7


def test_limits_underflow_to_zero_and_saturate():
    x = np.array([-np.inf, np.finfo(np.float32).min, -100.0, 0.0, 100.0, np.inf] * 16, dtype="float32")
    exp, sigmoid = _run(fast_exp_pass(_module(n=x.size)), x)
    np.testing.assert_array_equal(exp[:3], [0.0, 0.0, 0.0])  # softmax's masked entries contribute nothing
    assert exp[3] == 1.0 and np.isinf(exp[4:6]).all()  # float32 overflow, as expf
    np.testing.assert_allclose(sigmoid[:6], [0, 0, 0, 0.5, 1, 1], atol=1e-7)


def test_other_dtypes_are_left_as_they_are():
    mod = _module("float64")
    tvm.ir.assert_structural_equal(fast_exp_pass(mod), mod)
