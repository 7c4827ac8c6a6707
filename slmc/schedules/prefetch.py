"""Software prefetch at the top of a scheduled loop's body: LLVM's ``llvm.prefetch`` (``prefetcht0`` on
x86, ``prfm pldl1keep`` on Arm), one per cache line of a region the loop reads a few iterations later.

Why: a streaming kernel whose core also computes a lot per byte (slmc's weight-only int4 decode GEMV:
~3 vector uops per 16 weights, ~15 GB/s of codes per core) leaves the hardware prefetcher too little
lead; its loads then wait for DRAM and the time is compute *plus* memory, not the larger of the two
(docs/dev-notes.md, "Session 10"). A prefetch a fixed distance ahead lets the two overlap. The
statement is added to the scheduled PrimFunc after the schedule rule's primitives (``s_tir.Schedule``
has no prefetch primitive); a prefetch never faults, so an address past a buffer's end (the last
iterations) is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence

from tvm import s_tir, tirx

from slmc.errors import LoweringError

LINE_BYTES = 64  # cache line of every slmc CPU target (x86-64, Arm Cortex-A)
_PREFETCH = "llvm.prefetch.p0"
_READ, _KEEP_ALL_LEVELS, _DATA = 0, 3, 1  # llvm.prefetch operands: read, locality 3 (to L1), data cache


def prefetch_call(load: tirx.BufferLoad) -> tirx.PrimExpr:
    """The call that prefetches the cache line holding ``load``'s element (``T.evaluate`` it in TVMScript)."""
    return tirx.call_llvm_intrin("void", _PREFETCH, tirx.address_of(load), tirx.const(_READ, "int32"),
                                 tirx.const(_KEEP_ALL_LEVELS, "int32"), tirx.const(_DATA, "int32"))


def prefetch(load: tirx.BufferLoad) -> tirx.Stmt:
    """The statement that prefetches the cache line holding ``load``'s element."""
    return tirx.Evaluate(prefetch_call(load))


def prepend_to_loop(func: tirx.PrimFunc, loop: tirx.For, statements: Sequence[tirx.Stmt]) -> tirx.PrimFunc:
    """``func`` with ``statements`` run first in every iteration of ``loop`` (a ``For`` node of ``func``'s
    body, e.g. ``sch.get(loop_rv)`` after the schedule's last primitive). Raises ``LoweringError`` if
    ``loop`` is not found on a path of blocks, loops, sequences and branches."""
    found = []

    def rebuild(stmt: tirx.Stmt) -> tirx.Stmt:
        if stmt.same_as(loop):
            found.append(stmt)
            return tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, tirx.SeqStmt([*statements, stmt.body]),
                            stmt.thread_binding, stmt.annotations)
        if isinstance(stmt, s_tir.SBlockRealize):
            return s_tir.SBlockRealize(stmt.iter_values, stmt.predicate, rebuild(stmt.block))
        if isinstance(stmt, s_tir.SBlock):
            return s_tir.SBlock(stmt.iter_vars, stmt.reads, stmt.writes, stmt.name_hint, rebuild(stmt.body), stmt.init,
                                stmt.alloc_buffers, stmt.match_buffers, stmt.annotations)
        if isinstance(stmt, tirx.For):
            return tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, rebuild(stmt.body), stmt.thread_binding,
                            stmt.annotations)
        if isinstance(stmt, tirx.SeqStmt):
            return tirx.SeqStmt([rebuild(s) for s in stmt.seq])
        if isinstance(stmt, tirx.IfThenElse):
            other = rebuild(stmt.else_case) if stmt.else_case is not None else None
            return tirx.IfThenElse(stmt.condition, rebuild(stmt.then_case), other)
        return stmt

    body = rebuild(func.body)
    if len(found) != 1:
        raise LoweringError(f"prefetch: loop over '{loop.loop_var.name}' found {len(found)} times in the PrimFunc "
                            "(expected once: the loop must be a node of the function's body)")
    return func.with_body(body)
