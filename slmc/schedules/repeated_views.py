"""Relax rewrite: one view for the same reshape of the same tensor, not one per use.

A Llama layer reshapes the rotary tables (``cos``/``sin``: ``[1, 1, D]``, computed once per call) to
``[1, 1, 1, D]`` for its queries and keys (``unsqueeze`` in ``apply_rotary_pos_emb``), so a 30-layer decode step
makes the same two views 30 times: once legalized and through TVM's ``RewriteDataflowReshape``, each is an
``R.reshape`` and at run time a ``vm.builtin.reshape`` call (plus its ``kill_object``): 60 of the 244 reshapes of a
SmolLM-135M step (docs/dev-notes.md, "Session 13: VM cost per decode step"). ``R.reshape`` is pure and a view
aliases its operand, so a second ``R.reshape(x, s)`` of the same ``x`` and shape ``s`` in the same dataflow block
is the first one: this pass drops it and uses the first's variable.

Precondition: runs right after ``RewriteDataflowReshape`` (the dataflow blocks still there), on every Relax
function. Only dataflow variables are replaced (a block's output keeps its binding), within one block.
"""

from __future__ import annotations

import tvm
from tvm import relax

_RESHAPE = tvm.ir.Op.get("relax.reshape")


def _key(value: relax.Expr) -> tuple[relax.Var, str] | None:
    """``(operand, shape)`` of ``R.reshape`` of a variable to a known shape, else ``None``."""
    if not (isinstance(value, relax.Call) and value.op.same_as(_RESHAPE) and isinstance(value.args[0], relax.Var)):
        return None
    return value.args[0], str(value.args[1])


@relax.expr_functor.mutator
class _OneView(relax.PyExprMutator):
    """Drops each repeated reshape of a dataflow block, its variable remapped to the first."""

    def __init__(self, module: tvm.IRModule) -> None:
        super().__init__(module)
        self.first: dict[tuple[relax.Var, str], relax.Var] = {}
        self.dropped = 0

    def visit_dataflow_block_(self, block: relax.DataflowBlock) -> relax.BindingBlock:  # noqa: N802 (TVM's name)
        self.first = {}
        return super().visit_dataflow_block_(block)

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:  # noqa: N802 (TVM's visitor name)
        value = self.visit_expr(binding.value)
        key = _key(value) if isinstance(binding.var, relax.DataflowVar) else None
        if key is not None and key in self.first:
            self.set_var_remap(binding.var, self.first[key])
            self.dropped += 1
            return
        new_var = self.visit_var_def(binding.var)
        self.builder_.emit_normalized(relax.VarBinding(new_var, value))
        if key is not None:
            self.first[key] = new_var


@tvm.transform.module_pass(opt_level=0, name="slmc_repeated_views")
def repeated_views(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Every Relax function with one view per (tensor, shape) in a dataflow block (module docstring)."""
    out = mod
    for gv, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        rewriter = _OneView(out)
        new_func = rewriter.visit_expr(func)
        if rewriter.dropped:
            rewriter.builder_.update_func(gv, new_func)
            out = rewriter.builder_.get()
    return out
