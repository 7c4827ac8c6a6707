"""slmc.schedules.prefetch: software prefetch statements prepended to a scheduled loop's body."""

from __future__ import annotations

import numpy as np
import pytest
from tvm import s_tir, te, tirx

from slmc.errors import LoweringError
from slmc.schedules.prefetch import prefetch, prepend_to_loop


def _scheduled_copy():
    a = te.placeholder((4, 256), "float32", "a")
    b = te.compute((4, 256), lambda i, j: a[i, j] * 2.0, name="b")
    sch = s_tir.Schedule(te.create_prim_func([a, b]))
    i, _ = sch.get_loops(sch.get_sblock("b"))
    return sch, i


def test_prefetch_of_the_next_row_runs_first_in_each_iteration_and_the_result_is_unchanged(host_target):
    import tvm

    sch, i = _scheduled_copy()
    loop = sch.get(i)
    func = sch.mod["main"]
    table = next(r.source for r in sch.get(sch.get_sblock("b")).reads)
    func = prepend_to_loop(func, loop, [prefetch(tirx.BufferLoad(table, [loop.loop_var + 1, tirx.const(0, "int32")]))])
    text = func.script()
    assert text.index("llvm.prefetch") < text.index('T.sblock("b")')
    lib = tvm.compile(tvm.IRModule({"main": func}), target=host_target.tvm_target())
    x = np.arange(1024, dtype=np.float32).reshape(4, 256)
    out = tvm.runtime.tensor(np.zeros_like(x))
    lib["main"](tvm.runtime.tensor(x), out)
    np.testing.assert_array_equal(out.numpy(), x * 2)


def test_a_loop_not_in_the_function_is_an_error():
    sch, _ = _scheduled_copy()
    other, j = _scheduled_copy()
    with pytest.raises(LoweringError, match="loop over 'i' found 0 times"):
        prepend_to_loop(sch.mod["main"], other.get(j), [])
