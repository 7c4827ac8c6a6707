"""Rule: row-wise reductions with their elementwise stages, one row at a time (softmax, RMSNorm, LayerNorm).

A fused kernel qualifies when every block iterates the same leading *row* loops (e.g. ``[1, T]`` for
a norm over the hidden size, ``[1, H, T]`` for attention's softmax over keys) followed by at most
one unit loop and one *row axis* loop, at least one block reduces over its row axis, and the last
block is elementwise. Schedule:

* every block is computed inside the row loop of the last one (``compute_at``; another output of
  its loop nest, ``slmc.schedules.residual_norm``'s residual sum, moves with it), so the row's
  statistics (max, sum, mean of squares; per-row scalar stages such as LayerNorm's mean) and
  intermediates stay in cache; a full-width elementwise stage that only feeds elementwise stages
  is inlined into them (softmax's ``exp / sum`` into the copy after it, RMSNorm's two multiplies);
* a reduction over a static row axis that is whole vectors is split by ``rfactor`` into a vector
  of partial sums (one vector instruction per ``lanes`` elements) and a final sum across lanes;
* elementwise blocks over a static row axis are vectorized; a dynamic row axis (softmax's key
  length) stays a scalar loop: vectorizing it would need a guarded tail, which TVM scalarizes into
  masked gathers (measured slower than the plain loop);
* rows run in parallel when the kernel's static work reaches the fallback's ``MIN_PARALLEL_WORK``
  (as for every kernel: parallel launches cost microseconds, far more on shared cores); with
  dynamic tokens (and keys) that is never the case in slmc's causal LMs, where a row is a few
  microseconds of work.

dlight's ``cpu.Reduction`` (which this rule precedes) vectorizes dynamic axes and leaves
reductions scalar. Numerics: only the order of the additions within a row changes (lane-wise
partial sums), a rounding-level difference like any vectorized sum.
"""

from __future__ import annotations

import math

from tvm import s_tir, tirx
from tvm.target import Target

from slmc.schedules.relax_patterns import same_size
from slmc.schedules.fallback import MIN_PARALLEL_WORK
from slmc.schedules.row_matmul import CpuParams, static_extent
from slmc.schedules.rule import SlmcCpuRule

BlockRV = s_tir.schedule.SBlockRV


def _is_reduction(sch: s_tir.Schedule, block: BlockRV) -> bool:
    return any(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(block).iter_vars)


def _row_axes(sch: s_tir.Schedule, blocks: list[BlockRV]) -> int | None:
    """How many leading loops are row loops (those of the last block but its last), when every
    block has them with the same extents, then at most a unit loop, then one row-axis loop whose
    block iterator is its only reduction iterator (or spatial); else ``None``."""
    last_loops = sch.get_loops(blocks[-1])
    rows = len(last_loops) - 1
    if rows < 1:
        return None
    extents = [sch.get(loop).extent for loop in last_loops[:rows]]
    for block in blocks:
        loops = sch.get_loops(block)
        if len(loops) not in (rows, rows + 1, rows + 2) or not _bound_in_order(sch, block):
            return None
        if len(loops) == rows and _is_reduction(sch, block):  # a reduction over the rows themselves
            return None
        if any(not same_size(sch.get(loop).extent, extent) for loop, extent in zip(loops, extents)):
            return None
        if len(loops) == rows + 2 and static_extent(sch, loops[rows]) != 1:
            return None
        kinds = [iv.iter_type for iv in sch.get(block).iter_vars]
        if any(kind == tirx.IterVar.CommReduce for kind in kinds[:-1]):
            return None
        if any(kind not in (tirx.IterVar.DataPar, tirx.IterVar.CommReduce) for kind in kinds):
            return None
    return rows


def _bound_in_order(sch: s_tir.Schedule, block: BlockRV) -> bool:
    """Each block iterator is bound to exactly its own loop, in order (LegalizeOps' unscheduled form)."""
    loops = sch.get_loops(block)
    body = sch.get(loops[-1]).body if loops else None
    realizes = list(body.seq) if isinstance(body, tirx.SeqStmt) else [body]  # a multi-output compute: one each
    realize = next((r for r in realizes if isinstance(r, s_tir.SBlockRealize) and r.block.same_as(sch.get(block))), None)
    if realize is None or len(realize.iter_values) != len(loops):
        return False
    return all(value.same_as(sch.get(loop).loop_var) for value, loop in zip(realize.iter_values, loops))


def _bound_loop(sch: s_tir.Schedule, block: BlockRV, index: int) -> s_tir.schedule.LoopRV:
    """The loop whose variable the block's ``index``-th iterator is bound to."""
    loops = sch.get_loops(block)
    value = sch.get(loops[-1]).body.iter_values[index]
    return next(loop for loop in loops if sch.get(loop).loop_var.same_as(value))


class RowReduction(SlmcCpuRule):
    """Schedules softmax / norm kernels one row at a time (see the module docstring)."""

    def schedule(self, func: tirx.PrimFunc, target: Target, params: CpuParams) -> s_tir.Schedule | None:
        if self.kernel_kind(func) is not None:
            return None
        sch = s_tir.Schedule(func)
        blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
        if len(blocks) < 2 or _is_reduction(sch, blocks[-1]) or not any(_is_reduction(sch, b) for b in blocks):
            return None
        rows = _row_axes(sch, blocks)
        if rows is None:
            return None
        extents = [static_extent(sch, loop) for loop in sch.get_loops(blocks[-1])]
        parallel = math.prod(e for e in extents if e is not None) >= MIN_PARALLEL_WORK
        # other outputs of the last block's own loop nest (a multi-output compute: slmc.schedules.residual_norm's
        # residual sum) move and vectorize with it
        innermost = sch.get(sch.get_loops(blocks[-1])[-1])
        leaves = [str(sch.get(b).name_hint) for b in blocks[:-1] if sch.get(sch.get_loops(b)[-1]).same_as(innermost)]
        if any(sch.get_consumers(sch.get_sblock(name)) for name in leaves):
            return None
        for block in blocks[:-1]:  # full-width elementwise stages feeding elementwise stages: no buffer
            loops = sch.get_loops(block)
            consumers = sch.get_consumers(block)
            if len(loops) == rows + 1 and static_extent(sch, loops[-1]) != 1 and not _is_reduction(sch, block) and \
                    consumers and not any(_is_reduction(sch, consumer) for consumer in consumers):
                sch.compute_inline(block)
        blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
        names = [str(sch.get(b).name_hint) for b in blocks if str(sch.get(b).name_hint) not in leaves]
        # reductions over a static, whole-vector row axis: a vector of partial sums first (own loop nest)
        staged: list[str] = []
        for name in names:
            block = sch.get_sblock(name)
            axis = sch.get_loops(block)[-1]
            width = static_extent(sch, axis)
            if _is_reduction(sch, block) and width is not None and width % params.lanes == 0 and width > params.lanes:
                _, lanes = sch.split(axis, factors=[None, params.lanes])
                partial = sch.rfactor(lanes, factor_axis=len(sch.get(block).iter_vars) - 1)
                staged.append(str(sch.get(partial).name_hint))
            staged.append(name)
        last = sch.get_sblock(staged[-1])
        loops = sch.get_loops(last)
        row = sch.fuse(*loops[:rows]) if rows > 1 else loops[0]
        for name in reversed(staged[:-1]):
            sch.compute_at(sch.get_sblock(name), row, preserve_unit_loops=True)
        for name in staged:
            self._vectorize(sch, sch.get_sblock(name), params, name not in names)
        if parallel:
            sch.parallel(row)
        for name in staged:
            if name not in names:  # partial sums: the init before the loop over the row's vectors
                block = sch.get_sblock(name)
                sch.decompose_reduction(block, _bound_loop(sch, block, -1))
        return sch

    @staticmethod
    def _vectorize(sch: s_tir.Schedule, block: BlockRV, params: CpuParams, partial: bool) -> None:
        """Vectorize the lanes of a partial-sum block (its reduction loop outside them), or an
        elementwise block's static row axis."""
        loops = sch.get_loops(block)
        if partial:  # rfactor put the lane iterator first; compute_at made its loop outermost
            lane, reduction = _bound_loop(sch, block, 0), _bound_loop(sch, block, -1)
            sch.reorder(reduction, lane)
            sch.vectorize(lane)
            return
        if _is_reduction(sch, block):
            return
        width = static_extent(sch, loops[-1])
        if width is not None and width % params.lanes == 0:
            _, lanes = sch.split(loops[-1], factors=[None, params.lanes])
            sch.vectorize(lanes)
