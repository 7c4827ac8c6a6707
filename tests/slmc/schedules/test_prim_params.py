"""Buffer and scalar parameters of a PrimFunc (slmc/schedules/prim_params.py), as TVM 0.27's TVMScript makes them."""

from __future__ import annotations

from tvm.script import tirx as T

from slmc.schedules.prim_params import buffer_params, is_buffer


@T.prim_func
def _scaled(a: T.handle, n: T.int64, B: T.Buffer((4,), "float32")):
    A = T.match_buffer(a, (n,), "float32")
    A[0] = B[0]


def test_buffers_are_told_from_the_scalar_sizes_relax_passes():
    assert [is_buffer(p) for p in _scaled.params] == [True, False, True]
    assert [p.name for p in buffer_params(_scaled)] == ["A", "B"]  # a match_buffer handle is named by its buffer
