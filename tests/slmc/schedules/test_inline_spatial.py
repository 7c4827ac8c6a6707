"""inline_intermediates (slmc.schedules.inline_spatial): a fused chain's intermediate blocks inlined by Fallback."""

from __future__ import annotations

import numpy as np
from schedule_helpers import AVX512_2CORES, run, workspace_allocation_sites
from tvm import s_tir, te, topi

from slmc.schedules.fallback import Fallback
from slmc.schedules.inline_spatial import inline_intermediates

WIDTH = 1536  # SmolLM-135M's intermediate size: each [1, 1, 1536] float32 intermediate is 6 KB


def _silu_times_up():
    """SiLU(gate) x up as FuseTIR leaves it (reshape, sigmoid, two multiplies, reshape: one block each)."""
    gate, up = te.placeholder((1, WIDTH), "float32", "gate"), te.placeholder((1, WIDTH), "float32", "up")
    g3 = topi.reshape(gate, (1, 1, WIDTH))
    silu = topi.multiply(g3, topi.sigmoid(g3))
    out = topi.reshape(topi.multiply(silu, topi.reshape(up, (1, 1, WIDTH))), (1, WIDTH))
    return te.create_prim_func([gate, up, out])


def test_a_fused_chain_becomes_one_block_with_no_buffer_and_no_workspace(host_target):
    """Before: 5 intermediate buffers of 6 KB, runtime workspaces at every call (2 sites after TVM's storage
    reuse); after: none. Exact (max abs
    difference 0.0 against the unscheduled kernel: the same expressions in the same order)."""
    func = _silu_times_up()
    target = host_target.tvm_target()
    assert workspace_allocation_sites(func, target) == 2
    scheduled = Fallback(AVX512_2CORES).apply(func, target, False).mod["main"]
    assert "sblock_alloc_buffer" not in scheduled.script() and workspace_allocation_sites(scheduled, target) == 0
    rng = np.random.default_rng(0)
    gate, up = (rng.standard_normal((1, WIDTH)).astype(np.float32) for _ in range(2))
    np.testing.assert_array_equal(run(scheduled, target, gate, up, out_shape=(1, WIDTH)),
                                  run(func, target, gate, up, out_shape=(1, WIDTH)))


def test_arithmetic_read_twice_is_not_duplicated():
    """``exp(x)``, loaded three times once the square is inlined into the sum, stays a block of its own
    (inlining would compute it three times); the reshape feeding it, a pure data move, is inlined."""
    x = te.placeholder((1, 64), "float32", "x")
    e = topi.exp(topi.reshape(x, (64,)))
    func = te.create_prim_func([x, topi.add(e, e * e)])
    sch = s_tir.Schedule(func)
    assert inline_intermediates(sch) == 2  # the reshape, and the square (one consumer)
    assert [str(sch.get(b).name_hint) for b in sch.get_child_blocks(sch.get_sblock("root"))] == ["compute", "T_add"]  # topi.exp names its block "compute"
