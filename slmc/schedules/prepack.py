"""Prepacking: weights that ``main`` only ever re-lays out are stored in that layout, once, at compile time.

TVM's torch frontend lowers ``linear`` to ``matmul(x, permute_dims(W))``, and slmc's kernel
converters read their weights through ``permute_dims`` / ``reshape`` chains into the layout their
kernels want (``[K, N]`` for the vectorized matmul rules of ``slmc.schedules``; tiled or
interleaved layouts for others). FuseOps does not fuse such a layout change into its consumer, so
each call would redo it on every weight. ``prepack`` rewrites ``main``: a weight parameter whose
every use is one and the same chain of ``reshape`` / ``permute_dims`` / ``memory.view`` calls is
replaced by a parameter of the chain's output shape and dtype, and the stored array is the chain
applied once with numpy (pure relayouts and reinterpretations of the bytes, so this is exact; a view
reads int4 code bytes as uint32 words, ``slmc.quantization.tvm_kernels._code_layout``).

A tied embedding table (read by ``take(W, ids, axis=0)`` and, as the output projection, by
``permute_dims(W)``) is stored transposed once and the gather reads it transposed:
``take(W, ids, axis=0) == permute_dims(take(W^T, ids, axis=1))``. A gather of a few rows at a
stride costs microseconds; transposing the whole table at every call cost 18.6 ms of a 35 ms decode
step of the SmolLM-135M shape (vocabulary 49152 x 576).

Precondition: ``main``'s parameters are the model inputs (``num_inputs`` of them) followed by the
weights, in the order of ``weights`` (``slmc.backend.lowering.RelaxProgram``). A weight with any other use
(or with two different chains) is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

_PERMUTE = tvm.ir.Op.get("relax.permute_dims")
_RESHAPE = tvm.ir.Op.get("relax.reshape")
_TAKE = tvm.ir.Op.get("relax.take")
_VIEW = tvm.ir.Op.get("relax.memory.view")


def _layout_step(call: relax.Call) -> tuple | None:
    """``("permute", axes)`` / ``("reshape", shape)`` for a static relayout of its first argument, else None."""
    if not isinstance(call.op, tvm.ir.Op):
        return None
    if call.op.same_as(_PERMUTE):
        ndim = call.args[0].ty.ndim
        axes = call.attrs.axes
        return ("permute", tuple(range(ndim - 1, -1, -1)) if axes is None else tuple(int(a) for a in axes))
    if call.op.same_as(_RESHAPE):
        shape = call.args[1]
        if isinstance(shape, relax.ShapeExpr) and all(isinstance(v, tvm.tirx.IntImm) for v in shape.values):
            return ("reshape", tuple(int(v) for v in shape.values))
    if call.op.same_as(_VIEW):  # a reinterpretation of the whole tensor: static shape, a dtype, no byte offset
        shape, dtype, offset = call.args[1:4]
        if (isinstance(shape, relax.ShapeExpr) and all(isinstance(v, tvm.tirx.IntImm) for v in shape.values)
                and isinstance(offset, relax.Tuple) and not offset.fields and dtype.value is not None):
            return ("view", (str(dtype.value), tuple(int(v) for v in shape.values)))
    return None


def _apply(array: np.ndarray, chain: tuple) -> np.ndarray:
    """The chain applied with numpy. A ``view`` reads the bytes as little-endian elements of its dtype
    (every slmc CPU target is little-endian) and stores them in the host's order."""
    for kind, value in chain:
        if kind == "view":
            dtype, shape = np.dtype(value[0]), value[1]
            array = np.ascontiguousarray(array).view(dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(shape)
        else:
            array = np.transpose(array, value) if kind == "permute" else np.reshape(array, value)
    return np.asarray(array, order="C")  # keeps 0-d arrays 0-d (np.ascontiguousarray does not)


def _stored_dtype(chain: tuple, dtype: str) -> str:
    """The element type after ``chain``: that of its last ``view``, else ``dtype``."""
    views = [value[0] for kind, value in chain if kind == "view"]
    return views[-1] if views else dtype


def _is_row_gather(call: relax.Call, param: relax.Var) -> bool:
    """``take(param, ids, axis=0)`` on a 2-D ``param``."""
    return (isinstance(call.op, tvm.ir.Op) and call.op.same_as(_TAKE) and call.args[0].same_as(param)
            and param.ty.ndim == 2 and call.attrs.axis is not None and int(call.attrs.axis) == 0)


@dataclass
class _Plan:
    chain: tuple            # the relayout applied to the stored array
    ends: list[relax.Var]   # variables bound to the chain's result: each becomes the new parameter
    gathers: bool           # the parameter is also gathered by rows (a tied table; chain is a 2-D transpose)


class _Graph:
    """Bindings of ``main``'s dataflow and, per variable, the bindings that use it."""

    def __init__(self, func: relax.Function) -> None:
        self.value: dict[relax.Var, relax.Expr] = {}
        self.users: dict[relax.Var, list[relax.Var | None]] = {}
        for block in func.body.blocks:
            for binding in block.bindings:
                if isinstance(binding, relax.VarBinding):
                    self.value[binding.var] = binding.value
                for used in relax.analysis.free_vars(binding.value) if isinstance(binding, relax.VarBinding) else []:
                    self.users.setdefault(used, []).append(binding.var)
        for used in relax.analysis.free_vars(func.body.body):
            self.users.setdefault(used, []).append(None)

    def chain_from(self, start: relax.Var, first: relax.Var) -> tuple[tuple, relax.Var] | None:
        """The relayout chain starting at binding ``first`` (which reads ``start``), followed while each
        result has exactly one user that is again a relayout of it; ``None`` if ``first`` is no relayout."""
        chain: list[tuple] = []
        source, current = start, first
        while True:
            value = self.value.get(current)
            step = _layout_step(value) if isinstance(value, relax.Call) else None
            if step is None or not value.args[0].same_as(source):
                break
            chain.append(step)
            users = self.users.get(current, [])
            if len(users) != 1 or users[0] is None:
                return tuple(chain), current
            source, current = current, users[0]
        return (tuple(chain), source) if chain else None


def _plan(graph: _Graph, param: relax.Var) -> _Plan | None:
    chains, ends, gathers = set(), [], False
    for user in graph.users.get(param, []):
        value = graph.value.get(user) if user is not None else None
        if isinstance(value, relax.Call) and _is_row_gather(value, param):
            gathers = True
            continue
        found = graph.chain_from(param, user) if user is not None else None
        if found is None:
            return None
        chains.add(found[0])
        ends.append(found[1])
    if len(chains) != 1:
        return None
    chain = chains.pop()
    if gathers and chain != (("permute", (1, 0)),):
        return None
    return _Plan(chain, ends, gathers)


@relax.expr_functor.mutator
class _Rewrite(relax.PyExprMutator):
    """Binds each chain end to its new parameter; rewrites row gathers of a transposed table."""

    def __init__(self, module: tvm.IRModule, ends: dict[relax.Var, relax.Var], tables: dict[relax.Var, relax.Var]) -> None:
        super().__init__(module)
        self.ends = ends
        self.tables = tables

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        if binding.var in self.ends:  # its uses read the new parameter directly (no alias binding left)
            self.set_var_remap(binding.var, self.ends[binding.var])
            return
        value = binding.value
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.same_as(_TAKE) \
                and value.args[0] in self.tables:
            ids = self.visit_expr(value.args[1])
            columns = self.builder_.emit(relax.op.take(self.tables[value.args[0]], ids, axis=1, mode=value.attrs.mode))
            self.builder_.emit_normalized(relax.VarBinding(binding.var, self.builder_.normalize(relax.op.permute_dims(columns))))
            return
        super().visit_var_binding_(binding)


def prepack(module: tvm.IRModule, weights: list[np.ndarray], num_inputs: int) -> tuple[tvm.IRModule, list[np.ndarray], int]:
    """``module`` and ``weights`` with every only-relaid-out weight stored in its final layout; and how many.

    ``weights`` is updated in place (and returned): each replaced array is released as soon as its
    relaid copy exists, so prepacking a model holds one weight twice at a time, not the whole model."""
    main = module["main"]
    graph = _Graph(main)
    params = list(main.params)
    ends: dict[relax.Var, relax.Var] = {}
    tables: dict[relax.Var, relax.Var] = {}
    for index, param in enumerate(params[num_inputs:], start=num_inputs):
        plan = _plan(graph, param)
        if plan is None:
            continue
        stored = _apply(weights[index - num_inputs], plan.chain)
        new = relax.Var(param.name, relax.TensorType(list(stored.shape), _stored_dtype(plan.chain, param.ty.dtype)))
        params[index] = new
        weights[index - num_inputs] = stored
        ends.update({end: new for end in plan.ends})
        if plan.gathers:
            tables[param] = new
    if not ends:
        return module, weights, 0
    body = _Rewrite(module, ends, tables).visit_expr(main.body)
    func = relax.Function(params, body, main.ret_ty, main.is_pure, main.attrs, main.span)
    func = relax.analysis.remove_all_unused(func)
    module = tvm.IRModule(dict(module.functions_items()), attrs=module.attrs)
    module["main"] = func
    return module, weights, len([p for p, old in zip(params, main.params) if not p.same_as(old)])
