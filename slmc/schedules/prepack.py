"""Prepacking: weights that ``main`` only ever transposes are stored transposed, once, at compile time.

TVM's torch frontend lowers ``linear`` to ``matmul(x, permute_dims(W))`` and slmc's quantized
converters read their packed codes, scales and zero points through ``permute_dims`` into the
``[K, N]`` layout their kernels want; FuseOps does not fuse a transpose into a matmul, so each call
would transpose every weight again. ``prepack`` rewrites ``main`` so that such a weight parameter
is replaced by a parameter of the transposed shape and transposes the stored array instead: the
kernels read the ``[K, N]`` layout directly (``N`` contiguous, what the vectorized matmul rules in
``slmc.schedules`` need).

Precondition: ``main``'s parameters are the model inputs (``num_inputs`` of them) followed by the
weights, in the order of ``weights`` (``slmc.lowering.RelaxProgram``). A weight used by anything
but one and the same 2-D ``permute_dims`` (e.g. a tied embedding table) is left as it is.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

_PERMUTE = tvm.ir.Op.get("relax.permute_dims")


def _is_transpose(call: relax.Call) -> bool:
    if not (call.op.same_as(_PERMUTE) and len(call.args) == 1 and isinstance(call.args[0], relax.Var)
            and call.args[0].ty.ndim == 2):
        return False
    axes = call.attrs.axes
    return axes is None or [int(a) for a in axes] == [1, 0]


@relax.expr_functor.visitor
class _Uses(relax.PyExprVisitor):
    """Counts, per variable, its uses and its uses as the argument of a 2-D transpose."""

    def __init__(self) -> None:
        super().__init__()
        self.uses: dict[relax.Var, int] = {}
        self.transposed: dict[relax.Var, int] = {}

    def visit_var_(self, var: relax.Var) -> None:
        self.uses[var] = self.uses.get(var, 0) + 1

    def visit_call_(self, call: relax.Call) -> None:
        if isinstance(call.op, tvm.ir.Op) and _is_transpose(call):
            self.transposed[call.args[0]] = self.transposed.get(call.args[0], 0) + 1
        super().visit_call_(call)


@relax.expr_functor.mutator
class _Substitute(relax.PyExprMutator):
    """Replaces ``permute_dims(w)`` by the transposed parameter of ``w``."""

    def __init__(self, module: tvm.IRModule, replacements: dict[relax.Var, relax.Var]) -> None:
        super().__init__(module)
        self.replacements = replacements

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if isinstance(call.op, tvm.ir.Op) and _is_transpose(call) and call.args[0] in self.replacements:
            return self.replacements[call.args[0]]
        return super().visit_call_(call)


def prepack(module: tvm.IRModule, weights: list[np.ndarray], num_inputs: int) -> tuple[tvm.IRModule, list[np.ndarray], int]:
    """``module`` and ``weights`` with every only-transposed weight stored transposed; and how many."""
    main = module["main"]
    uses = _Uses()
    uses.visit_expr(main.body)
    params = list(main.params)
    replacements: dict[relax.Var, relax.Var] = {}
    weights = list(weights)
    for index, param in enumerate(params[num_inputs:], start=num_inputs):
        if not uses.transposed.get(param) or uses.transposed[param] != uses.uses.get(param):
            continue
        rows, cols = param.ty.shape.values
        new = relax.Var(param.name, relax.TensorType([cols, rows], param.ty.dtype))
        replacements[param] = new
        params[index] = new
        weights[index - num_inputs] = np.ascontiguousarray(weights[index - num_inputs].T)
    if not replacements:
        return module, weights, 0
    mutator = _Substitute(module, replacements)
    body = mutator.visit_expr(main.body)
    func = relax.Function(params, body, main.ret_ty, main.is_pure, main.attrs, main.span)
    module = tvm.IRModule(dict(module.functions_items()), attrs=module.attrs)
    module["main"] = func
    return module, weights, len(replacements)
