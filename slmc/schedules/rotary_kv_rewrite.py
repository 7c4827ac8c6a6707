"""Relax rewrite: in the decode step, a layer's rotary q/k and its two cache writes become one kernel.

After ``slmc.schedules.resident_kv`` (and ``flash_rewrite``) a layer of ``resident_step`` (one token) reads::

    x_q = permute_dims(reshape(rows_q, [1, 1, H, D]), [0, 2, 1, 3])          # likewise x_k, x_v
    q   = add(multiply(x_q, cos), multiply(concat((negative(x_q[..., D/2:]), x_q[..., :D/2]), -1), sin))
    k   = the same of x_k
    keys'   = call_tir_inplace(kv_write[_int8], (keys, k, past))             # (keys, key_scales, k, past)
    values' = call_tir_inplace(kv_write[_int8], (values, x_v, past))
    o   = call_tir(flash_attention, (reshape(broadcast_to(q)) [H, 1, D], keys', values', ...))

where ``rows_*`` are ``[1, 1, W]`` rows: one ``split`` of the merged QKV projection along the last axis
(merged siblings) or each projection's own output (the kernel reads the tensor they view: the projection's
``[1, W]`` output, no reshape). TVM fuses that into five kernels (the split, two rotary,
two writes), each a VM call and an allocation over numbers that are in L1. This pass replaces them by one
``call_tir_inplace(rotary_kv_write, (rows_q, rows_k, rows_v, cos, sin, keys, values[, scales], past))``
(``slmc.schedules.rotary_kv``) at the first write: the caches are written in place and the kernel's new
output is the query the attention reads. The same numbers: each is computed by the same operations
in the same order, and written as ``kv_write`` writes them.

Only ``resident_step`` (the decode step, static shapes but ``past``); prefill keeps its kernels. A layer
that differs (no rotary, a partial rotary, keys not rotated as the query is, an operand bound after the first
write, the attention not one ``flash_attention`` kernel) is left as it is and recorded in
``RotaryKV.declined`` with the reason (the lowering notes).
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator

from slmc.graph.kv_cache import RESIDENT_STEP
from slmc.schedules.flash_attention import KIND as FLASH
from slmc.schedules.kv_append import LAYER_ATTR
from slmc.schedules.relax_patterns import RewriteRecord, called_kernel, is_op, same_shape, shape_of
from slmc.schedules.resident_kv import WRITE, WRITE_INT8
from slmc.schedules.rotary_kv import KIND, RotaryShape, rotary_kv_write_func


class RotaryKV(RewriteRecord):
    """What the pass did: layers rewritten per function, and why a layer was left (for the lowering notes)."""

    DONE = f"rotary q/k and the K/V cache writes: one kernel per layer ({KIND}) in {{}}"
    DECLINED = "rotary and cache writes not fused: {}"


class NotFused(Exception):
    """A layer's chain differs from the pattern (the message says how)."""


@dataclass
class _Rows:
    source: relax.Expr   # [1, ..., 1, W] float32
    offset: int
    heads: int
    dim: int


@dataclass
class _Plan:
    layer: int
    first: relax.Var                 # the earlier write's binding: the kernel is emitted there
    keys_write: relax.Var
    values_write: relax.Var
    query_var: relax.Var             # the variable flash_attention reads as its query
    rows: tuple[_Rows, _Rows, _Rows]
    cos: relax.Expr
    sin: relax.Expr
    caches: tuple[relax.Expr, ...]   # keys, values (int8: then key_scales, value_scales)
    past: relax.Expr
    stored: str


def _ints(expr: relax.Expr) -> list[int] | None:
    """The constants of a tuple of integers (``IntImm`` or ``PrimValue`` of one: ``strided_slice``'s axes / bounds)."""
    fields = expr.fields if isinstance(expr, relax.Tuple) else None
    values = [f if isinstance(f, tirx.IntImm) else getattr(f, "value", None) for f in fields or []]
    if fields is None or not all(isinstance(v, tirx.IntImm) for v in values):
        return None
    return [int(v) for v in values]


def _static(dims: list | None) -> list[int] | None:
    if dims is None or not all(isinstance(d, tirx.IntImm) for d in dims):
        return None
    return [int(d) for d in dims]


class _Function:
    """One function's bindings: each variable's value and position, and who reads it."""

    def __init__(self, mod: tvm.IRModule, func: relax.Function) -> None:
        self.mod = mod
        self.values: dict[relax.Var, relax.Expr] = {}
        self.position: dict[relax.Var, int] = {}
        self.readers: dict[relax.Var, list[int]] = {}
        for block in func.body.blocks:
            for binding in block.bindings:
                index = len(self.position)
                self.position[binding.var] = index
                if isinstance(binding, relax.VarBinding):
                    self.values[binding.var] = binding.value
                for used in relax.analysis.free_vars(binding.value) if isinstance(binding, relax.VarBinding) else []:
                    self.readers.setdefault(used, []).append(index)
        for used in relax.analysis.free_vars(func.body.body):
            self.readers.setdefault(used, []).append(len(self.position))

    def value(self, expr: relax.Expr) -> relax.Expr:
        return self.values.get(expr, expr) if isinstance(expr, relax.Var) else expr

    def kernel(self, expr: relax.Expr) -> tuple[str, tirx.PrimFunc] | None:
        kind, func = called_kernel(self.mod, expr)
        return None if kind is None else (kind, func)

    def rows(self, x: relax.Expr) -> _Rows:
        """``x = permute_dims(reshape(rows, [1, 1, H, D]), [0, 2, 1, 3])`` of a ``[1, 1, W]`` row, or of one
        part of a last-axis ``split`` of one."""
        perm = self.value(x)
        if not is_op(perm, "relax.permute_dims") or [int(a) for a in perm.attrs.axes or []] != [0, 2, 1, 3]:
            raise NotFused("a head tensor that is not a [0, 2, 1, 3] transpose of a reshaped row")
        shaped = self.value(perm.args[0])
        dims = _static(shape_of(shaped))
        if not is_op(shaped, "relax.reshape") or dims is None or len(dims) != 4 or dims[:2] != [1, 1]:
            raise NotFused("a head tensor not reshaped from one token's row to [1, 1, H, D]")
        heads, dim = dims[2], dims[3]
        part = shaped.args[0]
        width = _static(shape_of(part))
        if width != [1, 1, heads * dim] or str(part.ty.dtype) != "float32":
            raise NotFused(f"a head tensor's row is {shape_of(part)} {getattr(part.ty, 'dtype', '')}, "
                           f"not [1, 1, {heads * dim}] float32")
        item = self.value(part)
        if isinstance(item, relax.TupleGetItem):
            split = self.value(item.tuple_value)
            rows = split.args[0] if is_op(split, "relax.split") else None
            full = _static(shape_of(rows)) if rows is not None else None
            cuts = split.attrs.indices_or_sections if rows is not None else None
            if full is None or len(full) != 3 or int(split.attrs.axis) not in (-1, 2) \
                    or not isinstance(cuts, (list, tvm.ir.Array)) or str(rows.ty.dtype) != "float32":
                raise NotFused("a head tensor taken from a tuple that is no split of a [1, 1, W] row at given indices")
            starts = [0, *[int(c) for c in cuts]]
            return _Rows(self.unviewed(rows), starts[int(item.index)], heads, dim)
        return _Rows(self.unviewed(part), 0, heads, dim)

    def unviewed(self, rows: relax.Expr) -> relax.Expr:
        """``rows`` back through reshapes of a ``[1, ..., 1, W]`` tensor (a view the kernel need not be given: the
        projection's ``[1, W]`` output)."""
        while True:
            value = self.value(rows)
            dims = _static(shape_of(value.args[0])) if is_op(value, "relax.reshape") else None
            if dims is None or not dims or any(d != 1 for d in dims[:-1]) or dims[-1] != _static(shape_of(rows))[-1]:
                return rows
            rows = value.args[0]

    def rotary(self, expr: relax.Expr) -> tuple[relax.Expr, relax.Expr, relax.Expr] | None:
        """``(x, cos, sin)`` when ``expr`` is ``x * cos + rotate_half(x) * sin`` (either operand order)."""
        total = self.value(expr)
        if not is_op(total, "relax.add"):
            return None
        for plain, turned in (total.args, total.args[::-1]):
            plain_v, turned_v = self.value(plain), self.value(turned)
            if not (is_op(plain_v, "relax.multiply") and is_op(turned_v, "relax.multiply")):
                continue
            for x, cos in (plain_v.args, plain_v.args[::-1]):
                for rot, sin in (turned_v.args, turned_v.args[::-1]):
                    if self._rotate_half(rot, x):
                        return x, cos, sin
        return None

    def _rotate_half(self, rot: relax.Expr, x: relax.Expr) -> bool:
        """``rot = concat((negative(x[..., D/2:]), x[..., :D/2]), axis=-1)`` over the whole last axis of ``x``."""
        cat = self.value(rot)
        dims = _static(shape_of(x))
        if not is_op(cat, "relax.concat") or dims is None or dims[-1] % 2 or int(cat.attrs.axis) not in (-1, len(dims) - 1):
            return False
        parts = cat.args[0].fields if isinstance(cat.args[0], relax.Tuple) else []
        if len(parts) != 2:
            return False
        negated = self.value(parts[0])
        if not is_op(negated, "relax.negative"):
            return False
        half = dims[-1] // 2
        return self._slice(negated.args[0], x, half, dims[-1]) and self._slice(parts[1], x, 0, half)

    def _slice(self, expr: relax.Expr, x: relax.Expr, begin: int, end: int) -> bool:
        sliced = self.value(expr)
        if not is_op(sliced, "relax.strided_slice") or not sliced.args[0].same_as(x):
            return False
        axes, begins, ends = (_ints(a) for a in sliced.args[1:4])
        strides = _ints(sliced.args[4]) if len(sliced.args) > 4 else [1]
        rank = len(shape_of(x) or [])
        return (axes in ([rank - 1], [-1]) and begins == [begin] and ends is not None and len(ends) == 1
                and ends[0] >= end and strides == [1] and _static(shape_of(sliced)) is not None
                and _static(shape_of(sliced))[-1] == end - begin)

    def through(self, expr: relax.Expr) -> relax.Expr:
        """``expr`` back through reshapes and identity ``broadcast_to``s (the variable they come from)."""
        while True:
            value = self.value(expr)
            if is_op(value, "relax.reshape") or (
                    is_op(value, "relax.broadcast_to") and same_shape(shape_of(value.args[0]), shape_of(value))):
                expr = value.args[0]
                continue
            return expr


def _writes(fn: _Function) -> dict[int, list[relax.Var]]:
    """Each layer's cache-write bindings, in order."""
    out: dict[int, list[relax.Var]] = {}
    for var, value in fn.values.items():
        found = fn.kernel(value)
        if found is not None and found[0] in (WRITE, WRITE_INT8) and LAYER_ATTR in found[1].attrs:
            out.setdefault(int(found[1].attrs[LAYER_ATTR]), []).append(var)
    return out


def _query_of(fn: _Function, keys_write: relax.Var) -> relax.Var:
    """The variable ``flash_attention`` reads as its query, for the attention that reads ``keys_write``."""
    for var, value in fn.values.items():
        found = fn.kernel(value)
        if found is None or found[0] != FLASH:
            continue
        key = fn.value(value.args[1].fields[1])
        key = key.tuple_value if isinstance(key, relax.TupleGetItem) else value.args[1].fields[1]
        if key.same_as(keys_write):
            query = value.args[1].fields[0]
            if not isinstance(query, relax.Var):
                raise NotFused("flash_attention's query is not a bound variable")
            return query
    raise NotFused("the keys written are not read by one flash_attention kernel")


def _plan(fn: _Function, layer: int, writes: list[relax.Var]) -> _Plan:
    if len(writes) != 2:
        raise NotFused(f"{len(writes)} cache writes, not one for keys and one for values")
    int8 = fn.kernel(fn.values[writes[0]])[0] == WRITE_INT8
    new_at = 2 if int8 else 1
    rotated = [fn.rotary(fn.values[w].args[1].fields[new_at]) for w in writes]
    if sum(r is not None for r in rotated) != 1:
        raise NotFused("no rotary (x * cos + rotate_half(x) * sin) of exactly one of the written keys/values")
    k_index = 0 if rotated[0] is not None else 1
    keys_write, values_write = writes[k_index], writes[1 - k_index]
    x_k, cos, sin = rotated[k_index]
    query = _query_of(fn, keys_write)
    q_rot = fn.rotary(fn.through(query))
    if q_rot is None:
        raise NotFused("the attention's query is no rotary of a head tensor")
    x_q, q_cos, q_sin = q_rot
    if not (q_cos.same_as(cos) and q_sin.same_as(sin)):
        raise NotFused("the query and the keys are rotated by different tables")
    rows = (fn.rows(x_q), fn.rows(x_k), fn.rows(fn.values[values_write].args[1].fields[new_at]))
    dim = rows[0].dim
    if any(r.dim != dim for r in rows) or rows[1].heads != rows[2].heads or dim % 2:
        raise NotFused("q, k, v heads of different (or odd) sizes")
    for table in (cos, sin):
        if _static(shape_of(table)) != [1, 1, 1, dim] or str(table.ty.dtype) != "float32":
            raise NotFused(f"a rotary table of shape {shape_of(table)}, not [1, 1, 1, {dim}] float32 "
                           "(a partial rotary is not fused)")
    query_dims = _static(shape_of(query))
    if query_dims != [rows[0].heads, 1, dim]:
        raise NotFused(f"flash_attention's query is {shape_of(query)}, not [{rows[0].heads}, 1, {dim}]")
    k_call, v_call = fn.values[keys_write], fn.values[values_write]
    caches = ((k_call.args[1].fields[0], v_call.args[1].fields[0], k_call.args[1].fields[1], v_call.args[1].fields[1])
              if int8 else (k_call.args[1].fields[0], v_call.args[1].fields[0]))
    past = k_call.args[1].fields[-1]
    first = writes[0]
    at = fn.position[first]
    bound = [r.source for r in rows] + [cos, sin, *caches, past]
    if any(isinstance(e, relax.Var) and e in fn.position and fn.position[e] >= at for e in bound):
        raise NotFused("an operand is bound after the first cache write")
    early = [v for v in (query, keys_write, values_write) if any(i <= at for i in fn.readers.get(v, []))]
    if early or fn.position[query] <= at:
        raise NotFused("the query or a written cache is read before the first cache write")
    return _Plan(layer, first, keys_write, values_write, query, rows, cos, sin, caches, past,
                 str(caches[0].ty.dtype))


@mutator
class _Fuse(PyExprMutator):
    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.at: dict[relax.Var, _Plan] = {}
        self.skip: set[relax.Var] = set()

    def run(self, func: relax.Function, plans: list[_Plan]) -> relax.Function:
        self.at = {p.first: p for p in plans}
        self.skip = {v for p in plans for v in (p.keys_write, p.values_write, p.query_var)}
        return self.visit_expr(func)

    def _emit(self, var: relax.Var, value: relax.Expr) -> None:
        bound = self.builder_.emit(value) if isinstance(var, relax.DataflowVar) else self.builder_.emit_output(value)
        self.set_var_remap(var, bound)

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:  # noqa: N802 (TVM's visitor name)
        plan = self.at.get(binding.var)
        if plan is None:
            if binding.var not in self.skip:
                super().visit_var_binding_(binding)
            return
        layers, _, kv_heads, slots, dim = (int(d) for d in shape_of(plan.caches[0]))
        q, k, v = plan.rows
        shape = RotaryShape(layer=plan.layer, layers=layers, slots=slots, heads=q.heads, kv_heads=kv_heads, dim=dim,
                            rows=tuple(tuple(int(d) for d in shape_of(r.source)) for r in plan.rows),
                            offsets=(q.offset, k.offset, v.offset), stored=plan.stored)
        gvar = self.builder_.add_func(rotary_kv_write_func(shape), KIND)
        operands = [self.visit_expr(e) for e in (q.source, k.source, v.source, plan.cos, plan.sin, *plan.caches)]
        caches = operands[5:]
        query_ty = plan.query_var.ty
        if plan.stored == "int8":
            out_ty = [caches[0].ty, caches[2].ty, caches[1].ty, caches[3].ty, query_ty]
            indices = [5, 7, 6, 8, -1]
        else:
            out_ty = [caches[0].ty, caches[1].ty, query_ty]
            indices = [5, 6, -1]
        fused = self.builder_.emit(relax.op.call_tir_inplace(
            gvar, relax.Tuple([*operands, self.visit_expr(plan.past)]), indices, out_ty))
        parts = [relax.TupleGetItem(fused, i) for i in range(len(out_ty))]
        if plan.stored == "int8":
            self._emit(plan.keys_write, relax.Tuple(parts[0:2]))
            self._emit(plan.values_write, relax.Tuple(parts[2:4]))
        else:
            self._emit(plan.keys_write, parts[0])
            self._emit(plan.values_write, parts[1])
        self._emit(plan.query_var, parts[-1])


def rotary_kv_rewrite(notes: list[str] | None = None, record: RotaryKV | None = None) -> tvm.transform.Pass:
    """The module pass (see the module docstring). What it did (``RotaryKV.notes``) is appended to ``notes``
    (the lowering notes) and kept in ``record``."""
    record = record if record is not None else RotaryKV()

    @tvm.transform.module_pass(opt_level=0, name="slmc_rotary_kv_rewrite")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        gvar = next((g for g in mod.get_global_vars() if g.name_hint == RESIDENT_STEP), None)
        if gvar is None:
            return mod
        fn = _Function(mod, mod[gvar])
        plans = []
        for layer, writes in sorted(_writes(fn).items()):
            try:
                plans.append(_plan(fn, layer, writes))
            except NotFused as exc:
                record.declined.append(f"{RESIDENT_STEP}: {exc}")
        if plans:
            rewriter = _Fuse(mod)
            rewriter.builder_.update_func(gvar, relax.analysis.remove_all_unused(rewriter.run(mod[gvar], plans)))
            record.rewritten[RESIDENT_STEP] = len(plans)
            mod = relax.transform.DeadCodeElimination()(rewriter.builder_.get())
        if notes is not None:
            notes.extend(record.notes())
        return mod

    return _pass
