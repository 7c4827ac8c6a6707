"""Relax rewrite: logits for the last new token only, for generation (``resident_last`` beside ``resident_all``).

A prompt of ``T`` tokens needs the logits of its last token only, but ``resident_all`` computes the LM
head (``[T, hidden] x [hidden, V]``, for a small model the largest matmul) for every row. The head is
*row-wise*: each output row depends on the same row of its input only. This rewrite walks back from
the logits through bindings that are row-wise and have exactly one operand of ``T`` rows (the head's
reshapes, its matmul or quantized linear kernel, elementwise ops such as soft-capping), and stops at the
first value ``X`` that is not such (for slmc's decoders the normalized hidden state). ``resident_last``
is ``resident_all`` with ``X`` sliced to its last row before that chain, and the chain's sizes ``T``
set to 1. Exact: a row-wise chain maps the last row of ``X`` to the last row of its result.

Row-wise ops accepted: ``reshape`` keeping ``T`` as one dimension of its own, ``permute_dims``,
``matmul`` whose contracted axis is not ``T`` and whose other operand has no ``T``, unary and binary
elementwise ops, and the quantized linear kernels (``slmc.quantization.tvm_kernels``), which compute
rows independently.
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import relax, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator
from tvm.tirx.analysis import undefined_vars

from slmc.schedules.not_resident import NotResident
from slmc.schedules.relax_patterns import shape_of
from slmc.schedules.rule import KERNEL_ATTR

ELEMENTWISE = frozenset({"relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.tanh", "relax.astype",
                         "relax.sigmoid", "relax.clip", "relax.negative", "relax.exp", "relax.power"})
LAYOUT = frozenset({"relax.reshape", "relax.permute_dims", "relax.matmul"})
ROW_KERNELS = frozenset({"quantized_linear", "w8a8_linear", "w4a8_linear"})  # flat [rows, C] -> [rows, N], row by row
_CALL_TIR = tvm.ir.Op.get("relax.call_tir")


def _mentions(expr: Any, var: tirx.Var) -> bool:
    return any(v.same_as(var) for v in undefined_vars(expr))


def _has_rows(expr: relax.Expr, tokens: tirx.Var) -> bool:
    dims = shape_of(expr)
    return dims is not None and any(_mentions(d, tokens) for d in dims)


def _token_axis(dims: list[Any] | None, tokens: tirx.Var) -> int | None:
    """The one axis of size ``tokens`` when no other size mentions it."""
    if dims is None:
        return None
    axes = [i for i, d in enumerate(dims) if _mentions(d, tokens)]
    return axes[0] if len(axes) == 1 and dims[axes[0]].same_as(tokens) else None


class _Chain:
    def __init__(self, mod: tvm.IRModule, bindings: dict[relax.Var, relax.Expr], tokens: tirx.Var):
        self.mod, self.bindings, self.tokens = mod, bindings, tokens

    def row_operand(self, value: relax.Expr) -> relax.Var | None:
        """The one operand with ``T`` rows when ``value`` is row-wise in it (see the module docstring)."""
        if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):
            return None
        args = list(value.args[1].fields) if value.op.same_as(_CALL_TIR) else list(value.args)
        rows = [a for a in args if isinstance(a, relax.Expr) and not tvm.ir.is_prim_expr(a)
                and not isinstance(a, relax.ShapeExpr) and _has_rows(a, self.tokens)]
        if len(rows) != 1 or not isinstance(rows[0], relax.Var):
            return None
        operand, name = rows[0], value.op.name
        if value.op.same_as(_CALL_TIR):
            func = self.mod[value.args[0]]
            kind = str(func.attrs[KERNEL_ATTR]) if func.attrs is not None and KERNEL_ATTR in func.attrs else None
            ok = kind in ROW_KERNELS and args[0].same_as(operand) and _token_axis(shape_of(operand), self.tokens) == 0
        elif name == "relax.reshape":
            ok = _token_axis(shape_of(operand), self.tokens) is not None and _token_axis(shape_of(value), self.tokens) is not None
        elif name == "relax.matmul":
            dims = shape_of(operand)
            ok = args[0].same_as(operand) and dims is not None and _token_axis(dims, self.tokens) not in (None, len(dims) - 1)
        else:
            ok = name in ELEMENTWISE or name == "relax.permute_dims"
        return operand if ok else None

    def walk(self, output: relax.Var) -> tuple[relax.Var, list[relax.Var]]:
        """``(X, chain)``: the head's input and the row-wise bindings from it to ``output``, in order."""
        chain: list[relax.Var] = []
        current = output
        while current in self.bindings:
            operand = self.row_operand(self.bindings[current])
            if operand is None:
                break
            chain.insert(0, current)
            current = operand
        return current, chain


def _one_row(value: Any, tokens: tirx.Var) -> Any:
    """A size with ``T`` set to 1 (only ``T`` itself is replaced; a compound size of ``T`` is refused)."""
    if isinstance(value, tirx.Var) and value.same_as(tokens):
        return tirx.IntImm("int64", 1)
    if _mentions(value, tokens):
        raise NotResident(f"the LM head has a size {value} computed from the token count")
    return value


@mutator
class _LastRow(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, head_input: relax.Var, chain: list[relax.Var], output: relax.Var,
                 tokens: tirx.Var, axis: int):
        super().__init__(mod)
        self.head_input, self.chain, self.output, self.tokens, self.axis = head_input, set(chain), output, tokens, axis

    def _arg(self, arg: relax.Expr) -> relax.Expr:
        if isinstance(arg, relax.ShapeExpr):
            return relax.ShapeExpr([_one_row(v, self.tokens) for v in arg.values])
        if isinstance(arg, relax.Tuple):
            return relax.Tuple([self._arg(f) for f in arg.fields])
        if tvm.ir.is_prim_expr(arg):
            return _one_row(arg, self.tokens)
        return self.visit_expr(arg)

    def _type(self, ty: Any) -> Any:
        if isinstance(ty, relax.TensorType) and isinstance(ty.shape, relax.ShapeExpr):
            return relax.TensorType([_one_row(v, self.tokens) for v in ty.shape.values], ty.dtype)
        raise NotResident("the LM head's kernel has an output type without a shape")

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:  # noqa: N802 (TVM's visitor name)
        var, value = binding.var, binding.value
        if var in self.chain:
            args = [value.args[0], *[self._arg(a) for a in value.args[1:]]] if value.op.same_as(_CALL_TIR) \
                else [self._arg(a) for a in value.args]
            sinfo = [self._type(t) for t in value.ty_args] if value.op.same_as(_CALL_TIR) else value.ty_args
            new = self.builder_.emit(relax.Call(value.op, args, value.attrs, sinfo), name_hint=var.name)
            self.set_var_remap(var, new)
            return
        if var.same_as(self.output):  # the returned alias of the last chain value, with its new type
            logits = self.visit_expr(value)
            out = relax.Var(var.name, logits.ty)
            self.builder_.emit_normalized(relax.VarBinding(out, logits))
            self.set_var_remap(var, out)
            return
        super().visit_var_binding_(binding)
        if var.same_as(self.head_input):
            rows = self.tokens
            last = self.builder_.emit(relax.op.strided_slice(self.visit_expr(var), [self.axis], [rows - 1], [rows],
                                                             assume_inbound=True), name_hint="last_row")
            self.set_var_remap(var, last)


def last_position_function(func: relax.Function, mod: tvm.IRModule) -> relax.Function:
    """``resident_all`` -> ``resident_last`` (see the module docstring)."""
    body = func.body
    if not isinstance(body, relax.SeqExpr) or len(body.blocks) != 1 or not isinstance(body.body, relax.Var):
        raise NotResident("resident_all is not one dataflow block ending in its output")
    tokens = shape_of(func.params[0])[1] if shape_of(func.params[0]) else None
    if not isinstance(tokens, tirx.Var):
        raise NotResident("input_ids has no symbolic token count")
    bindings = {b.var: b.value for b in body.blocks[0].bindings}
    output = body.body
    start = bindings.get(output)
    if not isinstance(start, relax.Var):
        raise NotResident("the output is not an alias of the logits")
    head_input, chain = _Chain(mod, bindings, tokens).walk(start)
    axis = _token_axis(shape_of(head_input), tokens)
    if not chain or axis is None or head_input not in bindings:
        raise NotResident("no row-wise LM head was found before the logits")
    inside = set(chain)
    readers = [v.name for v, value in bindings.items() if v not in inside and not v.same_as(output)
               and any(u in inside for u in relax.analysis.free_vars(value))]
    if readers:
        raise NotResident(f"the LM head's values are also read by {', '.join(readers)}")
    rewritten = _LastRow(mod, head_input, chain, output, tokens, axis).visit_expr(func)
    return relax.Function(rewritten.params, rewritten.body, rewritten.body.ty, func.is_pure, func.attrs)
