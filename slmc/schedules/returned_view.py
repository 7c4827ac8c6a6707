"""Relax rewrite: a function's returned reshape is a view, not a copy kernel.

A causal LM's head writes ``[rows, V]`` logits and the function returns them as ``[1, rows, V]``. Once
legalized, that reshape is a ``call_tir`` of a copy kernel; TVM 0.27's ``RewriteDataflowReshape`` turns such
calls back into views (``vm.builtin.reshape``) only when the result is a ``DataflowVar``, so the one that
*is* the function's output stays a kernel: for ``resident_step`` a parallel copy of 196 KB (SmolLM's 49,152
logits) and a launch at the end of every decode step (docs/dev-notes.md, session 10 "the decode step's fixed
cost"). This pass rewrites a returned ``call_tir`` whose kernel is a reshape (``has_reshape_pattern``, the
test ``RewriteDataflowReshape`` uses) into ``R.reshape`` of its operand, which ``LowerRuntimeBuiltin`` lowers to
the view.

Precondition (checked): the operand is the result of a ``call_tir`` (not ``call_tir_inplace``) in the same
function, i.e. a fresh tensor that aliases neither a parameter nor the resident cache, and is not returned itself
(two outputs would share memory). ``StaticPlanBlockMemory``
gives a reshape's result the storage token of its operand and leaves every token reaching the return value
unplanned, so the operand gets its own allocation per call, as the copy's output did: the returned logits
of two calls never share memory (tests/slmc/schedules/test_returned_view.py checks both).

Runs as the first of the dataflow-lowering passes (``slmc.backend.base.Backend.dataflow_lower_passes``), after
scheduling, on every Relax function.
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import relax

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")


def _returned_vars(body: relax.Expr) -> list[relax.Var]:
    """The variables a function body returns: itself, or the fields of a returned tuple."""
    result = body.body if isinstance(body, relax.SeqExpr) else body
    fields = result.fields if isinstance(result, relax.Tuple) else [result]
    return [field for field in fields if isinstance(field, relax.Var)]


def _bindings(body: relax.Expr) -> dict[relax.Var, relax.Expr]:
    """Every variable bound in the function's blocks, with its value."""
    if not isinstance(body, relax.SeqExpr):
        return {}
    return {binding.var: binding.value for block in body.blocks for binding in block.bindings
            if isinstance(binding, relax.VarBinding)}


def _copy_kernel(mod: tvm.IRModule, value: Any) -> relax.Expr | None:
    """The operand of ``value`` when it is a ``call_tir`` of a reshape kernel on one tensor, else ``None``."""
    if not (isinstance(value, relax.Call) and value.op.same_as(_CALL_TIR)):
        return None
    callee, args = value.args[0], value.args[1]
    if not isinstance(args, relax.Tuple) or len(args.fields) != 1 or len(value.args) > 2:
        return None
    kernel = mod[callee]
    if not isinstance(kernel, tvm.tirx.PrimFunc) or not relax.analysis.has_reshape_pattern(kernel):
        return None
    return args.fields[0]


def _views(mod: tvm.IRModule, func: relax.Function) -> dict[relax.Var, relax.Expr]:
    """The returned variables bound to a reshape copy of a fresh ``call_tir`` result, with their view."""
    bound = _bindings(func.body)
    returned = _returned_vars(func.body)
    views = {}
    for var in returned:
        operand = _copy_kernel(mod, bound.get(var))
        if any(operand is not None and operand.same_as(other) for other in returned):
            continue  # the operand is returned too: two outputs would share memory
        producer = bound.get(operand) if isinstance(operand, relax.Var) else None
        if isinstance(producer, relax.Call) and producer.op.same_as(_CALL_TIR) \
                and isinstance(var.ty, relax.TensorType) and isinstance(var.ty.shape, relax.ShapeExpr):
            views[var] = relax.op.reshape(operand, var.ty.shape)
    return views


@relax.expr_functor.mutator
class _AsView(relax.PyExprMutator):
    """Rebinds each chosen variable to its view (the copy's binding dropped)."""

    def __init__(self, module: tvm.IRModule, views: dict[relax.Var, relax.Expr]) -> None:
        super().__init__(module)
        self.views = views

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:  # noqa: N802 (TVM's visitor name)
        view = self.views.get(binding.var)
        if view is None:
            super().visit_var_binding_(binding)
            return
        value = self.builder_.normalize(relax.op.reshape(self.visit_expr(view.args[0]), view.args[1]))
        self.builder_.emit_normalized(relax.VarBinding(binding.var, value))


@tvm.transform.module_pass(opt_level=0, name="slmc_returned_view")
def returned_view(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Every Relax function's returned reshape copy of a fresh kernel result made a view (module docstring)."""
    found = {gv: views for gv, func in mod.functions_items()
             if isinstance(func, relax.Function) and (views := _views(mod, func))}
    if not found:
        return mod
    out = mod
    for gv, views in found.items():
        rewriter = _AsView(out, views)
        rewriter.builder_.update_func(gv, rewriter.visit_expr(out[gv]))
        out = rewriter.builder_.get()
    return relax.transform.DeadCodeElimination()(out)
