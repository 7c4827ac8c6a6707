"""Relax rewrite: a residual add and the RMSNorm after it become one kernel (a plain RMSNorm: one kernel too).

torch.export lowers ``LlamaRMSNorm`` (Zhang & Sennrich 2019, "Root Mean Square Layer Normalization")
and the residual stream before it to::

    s = add(a, b)                                       # the residual add (absent before the first layer)
    y = multiply(w, multiply(s, rsqrt(add(mean(power(s, 2), axis=-1, keepdims=True), eps))))

(either operand order of each ``add`` / ``multiply``; ``multiply(s, s)`` for the square; ``astype`` to
the same dtype anywhere in the chain). TVM 0.27's FuseOps does not fuse the square into the mean, so
that is three kernels per norm (``add``, ``power``, ``fused_mean_add_rsqrt_multiply_multiply``). This
pass replaces ``s`` and ``y`` by one kernel computing, per row, the sum of the squares of ``a + b``,
then ``y = w * (s * rsqrt(sum / H + eps))`` and ``s = a + b`` (stored: the residual stream reads it
on; the add is recomputed where it is read, the same rounding) — the same
operations in the same order but for the order of the additions in the sum (the rule's lane-wise
partial sums), and ``mean`` = ``sum / H`` as TVM legalizes it. A norm whose input is no such add is
one kernel with ``y`` alone. Later uses of ``s`` read the kernel's first output; an earlier use (none
in slmc's decoders) keeps the original add alive, so the result stays exact, only not faster.

Preconditions: the norm is over the last axis, ``w`` is a 1-D tensor of that axis' size, ``eps`` a
scalar constant, all operands of one float dtype and ``a``, ``b`` of ``s``'s shape (no broadcast).
Gemma's ``1 + w`` is the weight operand like any other 1-D tensor. Anything else (a norm over
another axis, a non-constant eps) is left as it is and counted in ``ResidualNorm.declined`` with the
reason; LayerNorm (``relax.nn.layer_norm``) is no candidate. The kernels are scheduled by the CPU ``RowReduction``
rule (``slmc.schedules.norms``): one row at a time, the sum of squares as vector partial sums.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import tvm
from tvm import relax, te, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator

from slmc.schedules.relax_patterns import is_op, same_shape, same_size, scalar_constant, shape_of

FUSED = "residual_rms_norm"
PLAIN = "rms_norm"


@dataclass
class ResidualNorm:
    """What the pass did: norms fused per function (with / without their residual add), and why a
    candidate (a ``rsqrt`` of a mean) was left."""

    with_add: dict[str, int] = field(default_factory=dict)
    plain: dict[str, int] = field(default_factory=dict)
    declined: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        names = sorted(set(self.with_add) | set(self.plain))
        done = ", ".join(f"{n} {self.with_add.get(n, 0)} with the residual add + {self.plain.get(n, 0)} plain"
                         for n in names)
        out = [f"RMSNorm: one kernel per norm ({FUSED} / {PLAIN}) in {done}"] if done else []
        return out + [f"RMSNorm not fused: {reason}" for reason in sorted(set(self.declined))]


@dataclass
class _Match:
    x: relax.Var                 # the norm's input (the residual sum when ``summands``)
    weight: relax.Expr
    eps: float
    summands: tuple[relax.Expr, relax.Expr] | None


def rms_norm_te(x: te.Tensor, weight: te.Tensor, eps: float, residual: te.Tensor | None = None) -> Any:
    """``w * (s * rsqrt(mean(s^2, -1) + eps))`` over the last axis of ``s = x (+ residual)``; with a
    residual ``[s, y]``, else ``y``. The sum is recomputed where it is read (one add per element, the
    same rounding) and stored by the norm's own loop nest (one multi-output compute), so the
    ``RowReduction`` rule computes every block inside that row loop (TVM's ``compute_at`` refuses a
    block writing an output)."""
    shape = list(x.shape)
    width = shape[-1]

    def s(*i: Any) -> Any:
        return x(*i) if residual is None else x(*i) + residual(*i)

    k = te.reduce_axis((0, width), name="k")
    squares = te.compute(shape[:-1], lambda *i: te.sum(s(*i, k) * s(*i, k), axis=k), name="sum_squares")
    count = tirx.Cast(x.dtype, width)
    eps_c = tirx.const(eps, x.dtype)

    def scaled(*i: Any) -> Any:
        return weight(i[-1]) * (s(*i) * tirx.rsqrt(squares(*i[:-1]) / count + eps_c))

    if residual is None:
        return te.compute(shape, scaled, name="rms_norm")
    return list(te.compute(shape, lambda *i: [s(*i), scaled(*i)], name="residual_rms_norm"))


def _dtype(expr: relax.Expr) -> str:
    return str(getattr(expr.ty, "dtype", ""))


class _Bindings:
    """Each variable's bound value in one function, through ``astype`` to the same dtype."""

    def __init__(self, func: relax.Function) -> None:
        self.values: dict[relax.Var, relax.Expr] = {}
        for block in func.body.blocks:
            for binding in block.bindings:
                if isinstance(binding, relax.VarBinding):
                    self.values[binding.var] = binding.value

    def value(self, expr: relax.Expr) -> relax.Expr:
        while isinstance(expr, relax.Var) and expr in self.values:
            bound = self.values[expr]
            if is_op(bound, "relax.astype") and _dtype(bound.args[0]) == _dtype(bound):
                expr = bound.args[0]
                continue
            return bound
        return expr

    def source(self, expr: relax.Expr) -> relax.Expr:
        """``expr`` through same-dtype ``astype`` bindings (the variable they copy)."""
        while isinstance(expr, relax.Var) and expr in self.values:
            bound = self.values[expr]
            if not (is_op(bound, "relax.astype") and _dtype(bound.args[0]) == _dtype(bound)):
                break
            expr = bound.args[0]
        return expr


def _match(out: relax.Call, env: _Bindings) -> _Match | str | None:
    """The norm ``out`` computes, a reason it is not one, or ``None`` (not a norm's last multiply)."""
    if not is_op(out, "relax.multiply"):
        return None
    for weight, normed in (out.args, reversed(out.args)):
        inner = env.value(normed)
        if not is_op(inner, "relax.multiply"):
            continue
        for x, scale in (inner.args, reversed(inner.args)):
            rsqrt = env.value(scale)
            if not is_op(rsqrt, "relax.rsqrt"):
                continue
            return _norm(weight, env.source(x), env.value(rsqrt.args[0]), env)
    return None


def _norm(weight: relax.Expr, x: relax.Expr, shifted: Any, env: _Bindings) -> _Match | str:
    if not is_op(shifted, "relax.add"):
        return "rsqrt of no mean + eps"
    first, second = shifted.args
    eps, mean = scalar_constant(second), first
    if eps is None:
        eps, mean = scalar_constant(first), second
    mean = env.value(mean)
    if eps is None or not is_op(mean, "relax.mean"):
        return "rsqrt of no mean + scalar eps"
    dims = shape_of(x)
    axes = [int(a) for a in mean.attrs.axis] if mean.attrs.axis is not None else []
    if not isinstance(x, relax.Var) or dims is None or axes not in ([-1], [len(dims) - 1]) or not mean.attrs.keepdims:
        return "a mean not over the last axis of a tensor variable (keepdims)"
    square = env.value(mean.args[0])
    squared = (is_op(square, "relax.power") and env.source(square.args[0]).same_as(x)
               and scalar_constant(square.args[1]) == 2.0) \
        or (is_op(square, "relax.multiply") and all(env.source(a).same_as(x) for a in square.args))
    if not squared:
        return "the mean is not of the normalized input's square"
    weight_dims = shape_of(weight)
    if weight_dims is None or len(weight_dims) != 1 or not same_size(weight_dims[0], dims[-1]):
        return "a weight that is not 1-D of the hidden size"
    if not _dtype(x).startswith(("float", "bfloat")) or _dtype(weight) != _dtype(x):
        return f"dtypes {_dtype(x)} / {_dtype(weight)} (one float dtype expected)"
    total = env.value(x)
    summands = None
    if is_op(total, "relax.add") and all(_dtype(a) == _dtype(x) and same_shape(shape_of(a), dims) for a in total.args):
        summands = (total.args[0], total.args[1])
    return _Match(x, weight, eps, summands)


@mutator
class _Fuse(PyExprMutator):
    def __init__(self, module: tvm.IRModule) -> None:
        super().__init__(module)
        self.plans: dict[relax.Var, _Match] = {}
        self.declined: list[str] = []
        self.with_add = 0
        self.plain = 0

    def plan(self, func: relax.Function) -> None:
        env = _Bindings(func)
        self.plans = {}
        for var, value in env.values.items():
            found = _match(value, env)
            if isinstance(found, _Match):
                self.plans[var] = found
            elif isinstance(found, str):
                self.declined.append(found)

    def _emit(self, var: relax.Var, value: relax.Expr) -> relax.Var:
        bound = self.builder_.emit(value) if isinstance(var, relax.DataflowVar) else self.builder_.emit_output(value)
        self.set_var_remap(var, bound)
        return bound

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        match = self.plans.get(binding.var)
        if match is None:
            super().visit_var_binding_(binding)
            return
        weight = self.visit_expr(match.weight)
        if match.summands is None:
            y = self.builder_.call_te(rms_norm_te, self.visit_expr(match.x), weight, match.eps, primfunc_name_hint=PLAIN)
            self._emit(binding.var, y)
            self.plain += 1
            return
        a, b = (self.visit_expr(e) for e in match.summands)
        both = self.builder_.emit(self.builder_.call_te(rms_norm_te, a, weight, match.eps, b, primfunc_name_hint=FUSED))
        self._emit(match.x, relax.TupleGetItem(both, 0))
        self._emit(binding.var, relax.TupleGetItem(both, 1))
        self.with_add += 1


def residual_norm(notes: list[str] | None = None, record: ResidualNorm | None = None) -> tvm.transform.Pass:
    """The module pass (see the module docstring). What it did (``ResidualNorm.notes``) is appended to
    ``notes`` (the lowering notes) and kept in ``record``."""
    record = record if record is not None else ResidualNorm()

    @tvm.transform.module_pass(opt_level=0, name="slmc_residual_norm")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rewriter = _Fuse(mod)
        total = 0
        for gvar, func in list(mod.functions_items()):
            if not isinstance(func, relax.Function):
                continue
            before = (rewriter.with_add, rewriter.plain)
            rewriter.plan(func)
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
            added, plain = rewriter.with_add - before[0], rewriter.plain - before[1]
            if added:
                record.with_add[gvar.name_hint] = added
            if plain:
                record.plain[gvar.name_hint] = plain
            total += added + plain
        record.declined.extend(rewriter.declined)
        if notes is not None:
            notes.extend(record.notes())
        return relax.transform.DeadCodeElimination()(rewriter.builder_.get()) if total else mod

    return _pass
