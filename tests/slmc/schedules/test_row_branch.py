"""row_branch: copies of one kernel joined by row count (slmc.schedules.row_branch)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from schedule_helpers import rows_var
from tvm import s_tir, te

from slmc.schedules.row_branch import split_rows


def _scaled_rows() -> tvm.tirx.PrimFunc:
    """``out[m, n] = 2 * x[m, n] + b[n]``: row-separable, rows dynamic."""
    x = te.placeholder((rows_var(), 8), "float32", "x")
    b = te.placeholder((8,), "float32", "b")
    out = te.compute(x.shape, lambda m, n: x[m, n] * 2.0 + b[n], name="out")
    return te.create_prim_func([x, b, out])


def _split_by(block: int) -> tvm.tirx.PrimFunc:
    """Whole blocks with their row loop split by ``block`` (exact: no guard), the rest unscheduled."""
    func = _scaled_rows()

    def whole(part: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
        sch = s_tir.Schedule(part)
        m, _ = sch.get_loops(sch.get_sblock("out"))
        sch.unroll(sch.split(m, factors=[None, block])[1])
        return sch.mod["main"]

    return split_rows(func, func.params[0].shape[0], block, main=whole, tail=lambda part: part)


def test_whole_blocks_are_split_exactly():
    text = _split_by(4).script()
    blocks, tail = text.split("tail_rows: T.let", 1)
    assert "for m_0 in range(row_blocks):" in blocks and "T.unroll(T.int64(4))" in blocks
    assert "T.where" not in text  # no bounds check in either part


@pytest.mark.parametrize("rows", [0, 3, 4, 8, 11])
def test_every_row_is_computed_once_by_one_part(rows):
    lib = tvm.compile(tvm.IRModule({"main": _split_by(4)}), target=tvm.target.Target({"kind": "llvm"}))
    rng = np.random.default_rng(rows)
    x, b = rng.standard_normal((rows, 8)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    out = tvm.runtime.tensor(np.full((rows, 8), np.nan, np.float32))
    lib["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(b), out)
    np.testing.assert_allclose(out.numpy(), 2 * x + b, rtol=1e-6)


def test_declines_a_kernel_whose_rows_are_not_the_leading_axis():
    rows = rows_var()
    x = te.placeholder((8, rows), "float32", "x")  # rows as the second axis: not row-separable by views
    transposed = te.create_prim_func([x, te.compute((rows, 8), lambda m, n: x[n, m], name="t")])
    assert split_rows(transposed, transposed.params[0].shape[1], 4, main=lambda f: f, tail=lambda f: f) is None
