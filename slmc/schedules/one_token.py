"""Relax rewrite: ``resident_step``, the decode step with static shapes (``resident_last`` with ``T = 1``).

``resident_all`` / ``resident_last`` take any number ``T`` of new tokens. With ``T`` symbolic every call
builds its shapes at run time (``vm.builtin.make_shape``, ``vm.builtin.reshape`` views), and the kernels
carry both a one-row and a many-row loop nest and pick one per call (``slmc.schedules.row_branch``). A
decode step always feeds one token, so ``resident_step`` (``slmc.graph.kv_cache.RESIDENT_STEP``) is
``resident_last`` with ``T`` bound to 1 (``relax.Function.bind_symbolic_vars``): the same operations on
static shapes, which legalization and the schedule rules then build as one-row kernels; only the past
length ``P`` stays symbolic. Measured on 4 layers of the SmolLM-135M shape (int4 g32, context 128,
``benchmarks/decode_step_profile.py``; docs/dev-notes.md, session 9): 275 VM builtin calls per step instead
of 574 (``make_shape`` 177 -> 1). Exact up to float rounding (its kernels are the one-row
schedules of the same sums: measured 1.5e-6 largest difference in the 4-layer model's logits).

The PrimFuncs slmc emits before this rewrite (quantized linears, attention as ``call_tir``; the cache writes
as ``call_tir_inplace``) have the token count as a shape variable of their own and are shared with
``resident_last``. ``resident_step`` calls its own copies of them, specialized to the static shapes of its calls
(``PrimFunc.specialize``, added under ``<name>_step``): a fused group must see one buffer shape per Relax
value (TVM 0.27's FuseTIR refuses a symbolic ``[T, N]`` kernel output read by a legalized ``[1, N]`` ReLU,
OPT's fc1), and the schedule rules then build only the one-row nest.
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import relax, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator

from slmc.schedules.not_resident import NotResident
from slmc.schedules.prim_params import buffer_params
from slmc.schedules.row_branch import specialize_sizes

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")
_CALL_TIR_INPLACE = tvm.ir.Op.get("relax.call_tir_inplace")
_STRIDED_SLICE = tvm.ir.Op.get("relax.strided_slice")
STEP_SUFFIX = "_step"  # the name of a kernel's one-token copy


def one_token_function(last: relax.Function) -> relax.Function:
    """``resident_last`` (or ``resident_all``) with its token count bound to 1; ``NotResident`` when
    ``input_ids`` has no symbolic token count."""
    shape = getattr(last.params[0].ty, "shape", None)
    dims = list(shape.values) if isinstance(shape, relax.ShapeExpr) else []
    if len(dims) != 2 or not isinstance(dims[1], tirx.Var):
        raise NotResident("input_ids of the resident function has no symbolic token count")
    return last.bind_symbolic_vars({dims[1]: tirx.IntImm("int64", 1)})  # Relax shapes are int64


def one_token_module(mod: tvm.IRModule, last: relax.Function) -> tuple[tvm.IRModule, relax.Function]:
    """``(mod with the step's kernel copies, resident_step's function)`` from ``last`` (``resident_last``):
    ``one_token_function``, then every ``call_tir`` / ``call_tir_inplace`` whose PrimFunc has a shape variable that the call
    fixes redirected to a copy specialized to the call's shapes (one copy per kernel and shapes)."""
    own = _OwnKernels(mod)
    step = own.run(one_token_function(last))
    return own.builder_.get(), step


def _whole(slice_call: relax.Call) -> bool:
    """A ``strided_slice`` with unit strides whose input and output have the same static shape: it selects
    every element in order."""
    if len(slice_call.args) > 4:  # explicit strides
        return False
    (before,), (after,) = _static_dims(slice_call.args[0].ty), _static_dims(slice_call.ty)
    static = [d for d in (*before, *after) if isinstance(d, tirx.IntImm)]
    return bool(before) and len(static) == 2 * len(before) and [int(d) for d in before] == [int(d) for d in after]


def _static_dims(ty: Any) -> list[list[Any]]:
    """The shapes of a tensor type or a tuple of them (``call_tir``'s output types), in order."""
    if isinstance(ty, relax.TupleType):
        return [d for field in ty.fields for d in _static_dims(field)]
    shape = getattr(ty, "shape", None)
    return [list(shape.values) if isinstance(shape, relax.ShapeExpr) else []]


def _bound_sizes(func: tirx.PrimFunc, shapes: list[list[Any]]) -> dict[tirx.Var, tirx.IntImm]:
    """The PrimFunc's shape variables that the call's argument shapes fix to a constant."""
    fixed: dict[tirx.Var, tirx.IntImm] = {}
    for param, given in zip(buffer_params(func), shapes):
        for want, have in zip(param.ty.shape, given):
            if isinstance(want, tirx.Var) and isinstance(have, tirx.IntImm):
                fixed[want] = tirx.IntImm(str(want.ty.dtype), int(have))
    return fixed


def _buffer_shapes(call: relax.Call) -> list[list[Any]]:
    """The shapes of the kernel's buffer parameters, in order, from a ``call_tir`` (inputs, then outputs)
    or a ``call_tir_inplace`` (inputs, then the outputs that are not written into an input); scalar
    arguments (``PrimValue``: the cache writes' past length) are scalar parameters, no buffers."""
    inputs = [d for arg in call.args[1].fields if isinstance(arg.ty, relax.TensorType) for d in _static_dims(arg.ty)]
    outputs = _static_dims(call.ty_args[0])
    if call.op.same_as(_CALL_TIR_INPLACE):
        indices = [int(i) for i in call.attrs.inplace_indices]
        outputs = [shape for shape, index in zip(outputs, indices) if index == -1]
    return inputs + outputs


@mutator
class _OwnKernels(PyExprMutator):
    """Redirects ``call_tir`` and ``call_tir_inplace`` to copies of their PrimFunc specialized to the call's
    static shapes."""

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.module = mod
        self.copies: dict[tuple[str, tuple[tuple[str, int], ...]], tvm.ir.GlobalVar] = {}

    def run(self, function: relax.Function) -> relax.Function:
        return self.visit_expr(function)

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802 (TVM's visitor name)
        call = super().visit_call_(call)
        if call.op.same_as(_STRIDED_SLICE) and _whole(call):
            return call.args[0]  # resident_last's last-row slice of one row: the tensor itself, no kernel
        if not (call.op.same_as(_CALL_TIR) or call.op.same_as(_CALL_TIR_INPLACE)):
            return call
        callee = call.args[0]
        func = self.module[callee]
        if not isinstance(func, tirx.PrimFunc):
            return call
        fixed = _bound_sizes(func, _buffer_shapes(call))
        if not fixed:
            return call
        key = (callee.name_hint, tuple(sorted((v.name, int(c)) for v, c in fixed.items())))
        if key not in self.copies:
            copy = specialize_sizes(func, fixed)
            if copy.attrs is not None and "global_symbol" in copy.attrs:
                copy = copy.without_attr("global_symbol")  # private: the builder names it
            self.copies[key] = self.builder_.add_func(copy, f"{callee.name_hint}{STEP_SUFFIX}")
        return relax.Call(call.op, [self.copies[key], *call.args[1:]], call.attrs, call.ty_args, call.span)
