"""Rule of last resort: inline the intermediates, then parallelize the outermost loop, vectorize the
innermost, of every block.

Runs after slmc's and dlight's rules, on kernels none of them took (elementwise ops, transposes,
concatenations, reductions dlight declined). First a fused chain's intermediate blocks are inlined into
their consumers (``slmc.schedules.inline_spatial``: no pass over memory and no runtime workspace per op).
In a root-level block without reduction whose
innermost extent is a static multiple of the vector width, that loop is split into whole vectors;
when the block's static work is at least ``MIN_PARALLEL_WORK`` iterations, its loops outside any
reduction are fused and made parallel over the cores.
A kernel whose loops cannot be changed this way (e.g. opaque blocks) is left as it is.
"""

from __future__ import annotations

import math

from tvm import s_tir, tirx
from tvm.target import Target

from slmc.schedules.inline_spatial import inline_intermediates
from slmc.schedules.row_matmul import CpuParams, static_extent
from slmc.schedules.rule import SlmcCpuRule

# Parallel launches cost microseconds (and much more when the cores are shared): a kernel with
# less static work than this (decode's elementwise ops on one token) only gets vectorized.
MIN_PARALLEL_WORK = 16384


def _spatial_prefix(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> list[s_tir.schedule.LoopRV]:
    """The outer loops of ``block`` that bind only spatial block iterators, when every loop binds
    exactly one iterator, in order (LegalizeOps' unscheduled form); else none."""
    loops = sch.get_loops(block)
    if not loops:
        return []
    realize = sch.get(loops[-1]).body
    stmt = sch.get(block)
    if not isinstance(realize, s_tir.SBlockRealize) or len(loops) != len(stmt.iter_vars):
        return []
    prefix = []
    for loop, iv, value in zip(loops, stmt.iter_vars, realize.iter_values):
        if iv.iter_type != tirx.IterVar.DataPar or not value.same_as(sch.get(loop).loop_var):
            break
        prefix.append(loop)
    return prefix


def _static_work(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> int:
    """Iterations of ``block`` counting only static loop extents (a dynamic token axis counts 1: decode)."""
    extents = [static_extent(sch, loop) for loop in sch.get_loops(block)]
    return math.prod(e for e in extents if e is not None)


class Fallback(SlmcCpuRule):
    """Parallel outer loop and vectorized inner loop for any kernel left unscheduled."""

    def schedule(self, func: tirx.PrimFunc, target: Target, params: CpuParams) -> s_tir.Schedule | None:
        sch = s_tir.Schedule(func)
        changed = inline_intermediates(sch) > 0
        for block in list(sch.get_child_blocks(sch.get_sblock("root"))):
            prefix = _spatial_prefix(sch, block)
            if not prefix:
                continue
            spatial_only = len(prefix) == len(sch.get_loops(block))
            inner = static_extent(sch, prefix[-1])
            if spatial_only and inner is not None and inner % params.lanes == 0:
                # the innermost (contiguous) axis in whole vectors
                outer, lanes = sch.split(prefix[-1], factors=[None, params.lanes])
                sch.vectorize(lanes)
                prefix = [*prefix[:-1], outer]
                changed = True
            if _static_work(sch, block) >= MIN_PARALLEL_WORK:
                sch.parallel(sch.fuse(*prefix) if len(prefix) > 1 else prefix[0])
                changed = True
        return sch if changed else None
