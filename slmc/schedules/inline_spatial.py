"""Inline a fused kernel's intermediate spatial blocks into their consumers (before ``Fallback``'s loops).

``FuseTIR`` joins a chain of element-wise and layout ops (reshape, transpose, SiLU x up, RoPE's halves and
concatenation, the causal mask's comparisons) into one PrimFunc, but each op keeps its own block writing a
whole intermediate buffer, allocated in the kernel. Scheduled block by block, each op then makes a pass over
memory, and every intermediate of 1 KB or more (or of a dynamic size) costs a ``TVMBackendAllocWorkspace`` /
``FreeWorkspace`` pair of runtime calls per kernel call (TVM 0.27's LowerTVMBuiltin keeps only a ``"global"``
buffer of a constant size under 1 KB on the stack): in a 2-layer SmolLM-135M-shaped decode step, 14 of its 21
workspace allocations (docs/dev-notes.md, session 11). Inlined, the kernel computes each output element in one
expression and allocates nothing.

A block is inlined (``compute_inline``) when it writes one intermediate buffer of the kernel (not an
output), and either only moves data (its value is one buffer load: reshape, transpose, broadcast, slices)
or computes from its indices alone (``arange``), or is loaded exactly once by all its consumers together: an arithmetic producer read twice (``e + e * e``;
the argument of the polynomial ``exp`` of ``slmc.schedules.fast_exp``, which reads it ~20 times) stays, so no
arithmetic is duplicated. Blocks TVM cannot inline (reductions,
non-injective reads) are left as they are; the result computes the same expressions in the same order.
"""

from __future__ import annotations

import tvm_ffi
from tvm import s_tir, tirx
from tvm.s_tir.schedule import ScheduleError
from tvm.ir.expr import TensorLoad  # what tirx.BufferLoad (a function in 0.27) builds


def _intermediate_written(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV,
                          intermediates: list[tirx.Buffer]) -> bool:
    stmt = sch.get(block)
    return len(stmt.writes) == 1 and any(stmt.writes[0].source.same_as(b) for b in intermediates) \
        and all(iv.iter_type == tirx.IterVar.DataPar for iv in stmt.iter_vars)


def _loads(expr: object, buffer: tirx.Buffer | None = None) -> int:
    """How many loads (of ``buffer``, or of any buffer) ``expr`` makes, each occurrence counted."""
    count = [0]

    def seen(load: TensorLoad) -> None:
        count[0] += buffer is None or load.source.same_as(buffer)

    tvm_ffi.structural_walk(expr, [(TensorLoad, seen)])
    return count[0]


def _cheap_to_repeat(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    """Its value is one load (a copy), or reads no buffer at all (a function of the indices: ``arange``)."""
    body = sch.get(block).body
    return isinstance(body, tirx.BufferStore) and (isinstance(body.value, TensorLoad) or _loads(body.value) == 0)


def _read_once(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    written = sch.get(block).writes[0].source
    return sum(_loads(sch.get(consumer).body, written) for consumer in sch.get_consumers(block)) == 1


def inline_intermediates(sch: s_tir.Schedule) -> int:
    """Inline the root-level blocks the module docstring describes, until none is left; how many."""
    intermediates = list(sch.get(sch.get_sblock("root")).alloc_buffers)
    inlined = 0
    progress = True
    while progress:
        progress = False
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            if not _intermediate_written(sch, block, intermediates):
                continue
            if not _cheap_to_repeat(sch, block) and not _read_once(sch, block):
                continue
            try:
                sch.compute_inline(block)
            except ScheduleError:  # not inlinable (e.g. a consumer reads it through a reduction)
                continue
            inlined += 1
            progress = True
            break
    return inlined
