"""One PrimFunc that runs one of two schedules of the same kernel, chosen at run time by its row count.

A kernel's row count (tokens) is dynamic: 1 in decode, the prompt length in prefill. The best loop
nest differs (decode: one row, nothing to share and launches to avoid; prefill: work to share
between rows and cores), so a rule schedules the PrimFunc twice and ``branch_on_rows`` joins them.
"""

from __future__ import annotations

from tvm import s_tir, tirx


def branch_on_rows(decode: tirx.PrimFunc, prefill: tirx.PrimFunc, rows: tirx.PrimExpr) -> tirx.PrimFunc:
    """One PrimFunc with ``decode``'s parameters: ``if rows == 1`` decode's body, else prefill's.

    The two were scheduled from one PrimFunc, so they define the same variables; prefill's are
    renewed (``renew_defs``), its parameters declared as views of decode's (``DeclBuffer``) and their
    shape variables bound to decode's (``LetStmt``).
    """
    prefill = s_tir.renew_defs(prefill)
    bindings: list[tuple[tirx.Var, tirx.PrimExpr]] = []
    views = []
    for old, new in zip(decode.params, prefill.params):
        if not _is_buffer(new):  # a scalar parameter (a dynamic size Relax passes explicitly)
            bindings.append((new, old))
            continue
        for want, have in zip(new.shape, old.shape):
            if isinstance(want, tirx.Var) and not any(want.same_as(v) for v, _ in bindings):
                bindings.append((want, have))
        views.append(tirx.DeclBuffer(new, data=old.data))
    other = tirx.SeqStmt([*(tirx.LetStmt(v, value) for v, value in bindings), *views, prefill.body])
    root = s_tir.SBlock([], [], [], "root", tirx.IfThenElse((rows == 1).asobject(), decode.body, other))
    return decode.with_body(s_tir.SBlockRealize([], tirx.const(True, "bool"), root))


def _is_buffer(param: tirx.Var) -> bool:
    try:
        param.shape  # noqa: B018 - a Var of BufferType has one; a scalar Var raises
    except AttributeError:
        return False
    return True
