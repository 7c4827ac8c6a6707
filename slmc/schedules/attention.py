"""Rules: attention's score and value kernels (``slmc.schedules.attention_rewrite``), dynamic lengths.

Both kernels have a static head size ``D`` and dynamic query rows ``M`` (1 in decode, the prompt in
prefill) and key positions ``N`` (cache + new tokens). Vectors run along ``D``, the contiguous axis
of the cache, so no loop over a dynamic extent is vectorized (TVM would scalarize its guarded tail):

* ``attention_scores[h, m, n] = sum_d Q[h, m, d] * K[0, h // g, n, d]``: one loop over (head, row)
  pairs; per key, ``D / lanes`` vector multiply-adds into a vector of partial sums (``rfactor``),
  summed across lanes once per score.
* ``attention_values[h, m, d] = sum_n P[h, m, n] * V[0, h // g, n, d]``: one loop over (head, row)
  pairs; the ``D`` outputs of a row accumulate in vector registers over all keys, each value row
  read once, contiguous (the loop nest of ``slmc.schedules.row_matmul`` with one row).

The per-score partial sums and the row's accumulator are ``STACK_SCOPE`` buffers (``lanes`` and ``D``
floats): on the stack, not a ``TVMBackendAllocWorkspace``/``FreeWorkspace`` pair per (head, row) as a
``"local"`` buffer is in TVM 0.27 (``slmc.schedules.row_matmul.STACK_SCOPE``).

The (head, row) loop runs in parallel when the kernel's static work (heads x head size) reaches the
fallback's ``MIN_PARALLEL_WORK``, as for every other kernel. With a dynamic row count the kernel
holds both nests and picks one at run time (``slmc.schedules.row_branch``): one row (decode, a few
microseconds of work, where a parallel launch would cost more than it saves) serial, more rows
(prefill) parallel over (head, row) pairs.

A kernel whose head size is not a multiple of the vector width, or into which ``FuseOps`` fused
other operations (not seen in slmc's models: the scores are reshaped before they are scaled and
masked), is declined: the fallback takes it.
"""

from __future__ import annotations

import math

from tvm import s_tir, tirx
from tvm.target import Target

from slmc.schedules.attention_rewrite import SCORES, VALUES
from slmc.schedules.fallback import MIN_PARALLEL_WORK
from slmc.schedules.row_branch import branch_on_rows
from slmc.schedules.row_matmul import STACK_SCOPE, CpuParams, static_extent
from slmc.schedules.rule import SlmcCpuRule


def _kernel_block(sch: s_tir.Schedule) -> s_tir.schedule.SBlockRV | None:
    """The kernel's one block, ``[S, S, S, R]`` over four loops (the TE kernel as it was built)."""
    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    if len(blocks) != 1:
        return None
    block = blocks[0]
    if [iv.iter_type for iv in sch.get(block).iter_vars] != [tirx.IterVar.DataPar] * 3 + [tirx.IterVar.CommReduce]:
        return None
    return block if len(sch.get_loops(block)) == 4 else None


class _AttentionKernel(SlmcCpuRule):
    """Common checks: the kernel kind, its one block, a static head size of whole vectors."""

    kind = ""
    head_loop = 0  # which of the four loops runs over the head size D

    def schedule(self, func: tirx.PrimFunc, target: Target, params: CpuParams) -> s_tir.Schedule | None:
        if self.kernel_kind(func) != self.kind:
            return None
        sch = s_tir.Schedule(func)
        block = _kernel_block(sch)
        if block is None:
            return None
        loops = sch.get_loops(block)
        depth = static_extent(sch, loops[self.head_loop])
        if depth is None or depth % params.lanes:
            return None
        static_work = math.prod(e for e in (static_extent(sch, loop) for loop in loops) if e is not None)
        rows = sch.get(loops[1]).extent
        if static_work >= MIN_PARALLEL_WORK or isinstance(rows, tirx.IntImm):
            return self.loop_nest(sch, block, params, static_work >= MIN_PARALLEL_WORK)
        # dynamic rows: one row (decode) serial, several (prefill: rows x keys of work) in parallel
        serial, parallel = s_tir.Schedule(func), s_tir.Schedule(func)
        self.loop_nest(serial, _kernel_block(serial), params, False)
        self.loop_nest(parallel, _kernel_block(parallel), params, True)
        return s_tir.Schedule(branch_on_rows(serial.mod["main"], parallel.mod["main"], rows))

    def loop_nest(self, sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, params: CpuParams,
                  parallel: bool) -> s_tir.Schedule:
        raise NotImplementedError


class AttentionScores(_AttentionKernel):
    """Schedules ``slmc.kernel = attention_scores`` (see the module docstring)."""

    kind, head_loop = SCORES, 3

    def loop_nest(self, sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, params: CpuParams,
                  parallel: bool) -> s_tir.Schedule:
        d = sch.get_loops(block)[3]
        _, lanes = sch.split(d, factors=[None, params.lanes])
        partial = sch.rfactor(lanes, factor_axis=3)       # partial[h, m, n, lane] over d / lanes
        total = sch.get_sblock(str(sch.get(block).name_hint))
        sch.reverse_compute_at(total, sch.get_loops(partial)[2])  # under the key loop: one score at a time
        sch.set_scope(partial, 0, STACK_SCOPE)  # one vector of partial sums per score: on the stack
        h, m, _, outer, lane = sch.get_loops(partial)
        sch.vectorize(lane)
        rows = sch.fuse(h, m)
        if parallel:  # before decompose_reduction: the update block alone is no reduction block
            sch.parallel(rows)
        sch.decompose_reduction(partial, outer)
        return sch


class AttentionValues(_AttentionKernel):
    """Schedules ``slmc.kernel = attention_values`` (see the module docstring)."""

    kind, head_loop = VALUES, 2

    def loop_nest(self, sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, params: CpuParams,
                  parallel: bool) -> s_tir.Schedule:
        h, m, d, n = sch.get_loops(block)
        vectors, lanes = sch.split(d, factors=[None, params.lanes])
        sch.reorder(n, vectors, lanes)
        accumulator = sch.cache_write(block, 0, STACK_SCOPE)  # D floats (under 1 KB for D < 256): the stack
        sch.reverse_compute_at(accumulator, m)  # one row's D outputs: registers
        rows = sch.fuse(h, m)
        if parallel:
            sch.parallel(rows)
        sch.unroll(vectors)
        sch.vectorize(lanes)
        init = sch.decompose_reduction(block, n)
        for tail in (init, accumulator):
            innermost = sch.get_loops(tail)[-1]
            if sch.get(innermost).kind != tirx.ForKind.VECTORIZED:
                sch.vectorize(innermost)
        return sch


def attention_rules(params: CpuParams, notes: list[str]) -> list[SlmcCpuRule]:
    """Attention's score and value kernels, then its softmax and the norms (``slmc.schedules.norms``),
    in the order ``cpu_schedule_passes`` runs them (before dlight's rules)."""
    from slmc.schedules.norms import RowReduction

    return [AttentionScores(params, notes), AttentionValues(params, notes), RowReduction(params, notes)]
