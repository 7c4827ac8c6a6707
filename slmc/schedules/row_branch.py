"""One PrimFunc that runs differently scheduled copies of the same kernel, chosen at run time by its row count.

A kernel's row count (tokens) is dynamic: 1 in decode, the prompt length in prefill. The best loop
nest differs (decode: one row, nothing to share and launches to avoid; prefill: work to share
between rows and cores), so a rule schedules the PrimFunc twice and ``branch_on_rows`` joins them.
``split_rows`` goes one step further inside prefill: a copy specialized to a whole number of row
blocks (its loops split by the block exactly, no bounds check) runs the leading rows, and another
copy the last ``M mod block`` rows.
"""

from __future__ import annotations

from collections.abc import Callable

from tvm import s_tir, tirx
from tvm.tirx import op
from tvm.tirx.analysis import undefined_vars

from slmc.schedules.prim_params import buffer_params, is_buffer


def branch_on_rows(decode: tirx.PrimFunc, prefill: tirx.PrimFunc, rows: tirx.PrimExpr) -> tirx.PrimFunc:
    """One PrimFunc with ``decode``'s parameters: ``if rows == 1`` decode's body, else prefill's
    (``branch_on_condition``)."""
    return branch_on_condition(decode, prefill, (rows == 1).asobject())


def branch_on_condition(first: tirx.PrimFunc, second: tirx.PrimFunc, condition: tirx.PrimExpr) -> tirx.PrimFunc:
    """One PrimFunc with ``first``'s parameters: ``if condition`` (an expression of ``first``'s parameters and
    shape variables) ``first``'s body, else ``second``'s.

    The two were scheduled from one PrimFunc, so they define the same variables; ``second``'s are
    renewed (``renew_defs``), its parameters declared as views of ``first``'s (``DeclBuffer``) and their
    shape variables bound to ``first``'s (``LetStmt``).
    """
    other = _bound_body(first, s_tir.renew_defs(second), lambda old: old.data)
    root = s_tir.SBlock([], [], [], "root", tirx.IfThenElse(condition, first.body, other))
    return first.with_body(s_tir.SBlockRealize([], tirx.const(True, "bool"), root))


def split_rows(func: tirx.PrimFunc, rows: tirx.Var, block: int,
               main: Callable[[tirx.PrimFunc], tirx.PrimFunc],
               tail: Callable[[tirx.PrimFunc], tirx.PrimFunc]) -> tirx.PrimFunc | None:
    """One PrimFunc with ``func``'s parameters that computes rows ``[0, B)``, ``B = (M // block) * block``,
    with ``main(func specialized to B rows)`` and rows ``[B, M)`` with ``tail(func specialized to M - B rows)``
    (each part skipped when it has no rows); ``main`` and ``tail`` return the scheduled PrimFunc.

    ``B`` is ``mb * block`` with ``mb`` a variable bound outside the main part, so a split of its row
    loop by ``block`` (or a divisor of it) is exact: no ``T.where`` guard on the blocks inside. The
    tail's row-indexed buffers are views starting at row ``B`` (``address_of(buffer[B, 0, ...])``).

    Precondition: the kernel is row-separable -- row ``r`` of every output depends only on row ``r``
    of the row-indexed inputs (a linear layer and its elementwise epilogues). Checked as far as shapes
    tell: ``None`` (not split) unless every parameter whose shape mentions ``rows`` has it as its first
    dimension and nowhere else, and ``rows`` is not a scalar parameter itself.
    """
    if not _rows_lead(func, rows):
        return None
    dtype = rows.ty.dtype
    mb, start, rest = tirx.Var("row_blocks", dtype), tirx.Var("tail_start", dtype), tirx.Var("tail_rows", dtype)
    first_rows = _bound_body(func, main(_with_rows(func, rows, mb * block)), lambda old: old.data)
    last_rows = _bound_body(func, tail(_with_rows(func, rows, rest)), lambda old: _row_pointer(old, rows, start),
                            outside=(rest,))
    # the tail's first row is a variable of its own: TVM's common subexpression elimination otherwise
    # shares ``row_blocks * block * K`` between the two branches (an LLVM "does not dominate" error)
    body = tirx.SeqStmt([
        tirx.LetStmt(mb, tirx.floordiv(rows, block)), tirx.IfThenElse(mb > 0, first_rows, None),
        tirx.LetStmt(rest, tirx.floormod(rows, block)), tirx.LetStmt(start, rows - rest), tirx.IfThenElse(rest > 0, last_rows, None),
    ])
    root = s_tir.SBlock([], [], [], "root", body)
    return func.with_body(s_tir.SBlockRealize([], tirx.const(True, "bool"), root))


def _rows_lead(func: tirx.PrimFunc, rows: tirx.Var) -> bool:
    """Every parameter mentioning ``rows`` is a buffer with ``rows`` as its first dimension only."""
    for param in func.params:
        if not is_buffer(param):
            if param.same_as(rows):
                return False
            continue
        uses = [i for i, extent in enumerate(param.shape) if any(v.same_as(rows) for v in undefined_vars(extent))]
        if uses and (uses != [0] or not param.shape[0].same_as(rows)):
            return False
    return True


def _with_rows(func: tirx.PrimFunc, rows: tirx.Var, extent: tirx.PrimExpr) -> tirx.PrimFunc:
    """A copy of ``func`` (``renew_defs``: its own variables) whose row-indexed buffers have ``extent``
    rows (``specialize_sizes``); ``extent``'s variables stay free, bound where the copy is placed."""
    fresh = s_tir.renew_defs(func)
    own_rows = next((new.shape[0] for param, new in zip(func.params, fresh.params)
                     if is_buffer(param) and len(param.shape) and param.shape[0].same_as(rows)), None)
    return fresh if own_rows is None else specialize_sizes(fresh, {own_rows: extent})


def specialize_sizes(func: tirx.PrimFunc, sizes: dict[tirx.Var, tirx.PrimExpr]) -> tirx.PrimFunc:
    """``func`` with its shape variables ``sizes`` set (a constant, or an expression of variables bound
    where the copy is placed): for each, the first buffer parameter that has it as a dimension is
    specialized to that shape (``PrimFunc.specialize`` rewrites the body and every other buffer; TVM
    0.27 wants the unchanged dimensions and ``elem_offset`` passed as the same objects)."""
    buffers: dict[tirx.Var, tirx.Buffer] = {}
    left = dict(sizes)
    for param in buffer_params(func):
        old = param.ty
        mine = [d for d in old.shape if isinstance(d, tirx.Var) and any(d.same_as(v) for v in left)]
        if not mine:
            continue
        shape = [next((c for v, c in left.items() if v.same_as(d)), d) if isinstance(d, tirx.Var) else d
                 for d in old.shape]
        buffers[param] = tirx.decl_buffer(shape, old.dtype, param.name, elem_offset=old.elem_offset,
                                          data_alignment=old.data_alignment, offset_factor=old.offset_factor)
        left = {v: c for v, c in left.items() if not any(v.same_as(d) for d in mine)}
    return func.specialize(buffers) if buffers else func


def _row_pointer(buffer: tirx.Var, rows: tirx.Var, start: tirx.PrimExpr) -> tirx.PrimExpr:
    """Address of ``buffer[start, 0, ...]`` for a row-indexed buffer, else its data pointer."""
    if not len(buffer.shape) or not buffer.shape[0].same_as(rows):
        return buffer.data
    zero = tirx.const(0, start.ty.dtype)
    return op.address_of(tirx.BufferLoad(buffer, [start, *(zero for _ in buffer.shape[1:])]))


def _bound_body(outer: tirx.PrimFunc, part: tirx.PrimFunc, data: Callable[[tirx.Var], tirx.PrimExpr],
                outside: tuple[tirx.Var, ...] = ()) -> tirx.Stmt:
    """``part``'s body inside ``outer``: ``part`` was scheduled from a copy of ``outer`` with its own
    variables (``renew_defs``), so its parameters are declared as views of ``outer``'s at
    ``data(outer_param)`` and its shape variables bound to ``outer``'s, except those in ``outside``
    (bound by the caller: the row count of a view with fewer rows)."""
    bindings: list[tuple[tirx.Var, tirx.PrimExpr]] = []
    views = []
    for old, new in zip(outer.params, part.params):
        if not is_buffer(new):  # a scalar parameter (a dynamic size Relax passes explicitly)
            bindings.append((new, old))
            continue
        for want, have in zip(new.shape, old.shape):
            if isinstance(want, tirx.Var) and not any(want.same_as(v) for v in (*outside, *(v for v, _ in bindings))):
                bindings.append((want, have))
        views.append(tirx.DeclBuffer(new, data=data(old)))
    return tirx.SeqStmt([*(tirx.LetStmt(v, value) for v, value in bindings), *views, part.body])
