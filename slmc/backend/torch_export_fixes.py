"""Rewrites that make ``torch.export`` programs of Hugging Face decoders build in TVM 0.27.

Root cause
----------
transformers 5.x builds the causal/packed-sequence attention mask inside ``forward``
(``masking_utils.find_packed_sequence_indices`` + ``sdpa_mask``/``eager_mask``)::

    first = position_ids[:, :1] - 1
    packed = (torch.diff(position_ids, prepend=first, dim=-1) != 1).cumsum(-1)
    mask = packed[b, q] == packed[b, kv]  &  pos[b, kv] <= pos[b, q]  & ...

Two independent TVM problems follow from this subgraph:

1. **Integer promotion of ``cumsum`` is lost.** PyTorch promotes a ``bool`` (or any
   integral) input of ``cumsum``/``cumprod`` to ``int64`` when no ``dtype`` is given.
   TVM's frontend emits ``relax.cumsum(x, dtype=None)``, which keeps ``bool``; TOPI's
   scan then adds two ``bool`` values and LLVM codegen's ``CodeGenLLVM::CreateAdd`` only
   knows int/uint/float (bool has its own DLPack code since DLPack 1.0), so it fails with
   ``InternalError: Check failed: (t.MatchesCode(DLDataTypeCode::kDLFloat)) is false``.
   This is the error for a *static* sequence length. Minimal repro::

       torch.cumsum(x != 1, -1)          # x: int64 (1, 8); tvm.compile fails

2. **Symbolic shapes through ``slice`` are not simplified.** With a dynamic sequence
   dim ``s`` (``min >= 2``), PyTorch knows ``x[:, :1]`` has size 1, but Relax's
   ``strided_slice`` infers ``T.min(1, s)`` because it does not use the symbol's range.
   ``aten.diff(x, prepend=p)`` decomposes into ``cat`` + two slices + ``sub``; the two
   slice shapes (``T.min(s, T.min(1, s) + s)`` vs ``T.max(T.min(1, s) + s - 1, 0)``)
   cannot be proven equal, so the ``subtract`` (and the ``cumsum`` after it) gets an
   unknown shape, and ``relax.backend.DispatchSortScan`` raises
   ``ValueError: non-symbolic shape is not supported for now`` for the cumsum. This
   error hides problem 1 for dynamic exports. Minimal repro (dynamic dim 1)::

       torch.cumsum(torch.diff(x, dim=-1, prepend=x[:, :1] - 1), -1)

The bool codegen gap behind problem 1 also breaks comparisons of bool tensors
(``a == b``, ``a != True`` emit ``fcmp`` on ``i1``; ``a < b`` fails the same kDLFloat
check). The HF mask compares the cumsum result, so once the cumsum is int64 the four
families no longer hit it, but other graphs can.

Fix (a rewrite of the exported FX graph, no model changes)
-----------------------------------------------------------
* ``cumsum``/``cumprod`` whose input dtype differs from its output dtype get an explicit
  ``aten._to_copy(x, dtype=out_dtype)`` on the input.
* ``aten.diff`` along a symbolic dimension is decomposed here into ``cat``/``slice``/``sub``
  (``logical_xor`` for bool), so its slices are visible to the slice rule.
* ``eq/ne/lt/le/gt/ge`` with bool tensor operands compare them as ``uint8``.
* Every non-identity ``slice`` along a symbolic dimension is followed by an
  ``aten.reshape`` to the shape PyTorch inferred (``node.meta["val"]``), with symbolic
  sizes spelled as ``sym_size``/integer arithmetic nodes. The reshape is an identity in
  PyTorch and, in Relax, re-states the shape so downstream ops keep a known shape.

Integer inputs of float-valued math
-----------------------------------
PyTorch computes true division (``aten.div`` without ``rounding_mode``) and ``log``/``exp``/``sqrt``/...
of integer tensors in the default float dtype; TVM's frontend keeps the integer dtype (``int64 / 8``
stays int64, and ``relax.log`` then refuses it: "requires the input tensor to have float dtype").
DeBERTa-v2/v3's log-bucketed relative positions (``make_log_bucket_position``) compute
``log(abs_pos / mid)`` of integer distances. Each integer tensor operand gets an explicit
``aten._to_copy(x, dtype=out_dtype)``.

Integer powers
--------------
``aten.pow(x, n)`` with an integer exponent ``3 <= n <= MAX_EXPANDED_POWER`` (GELU's tanh approximation,
``gelu_new`` of GPT-2 and Phi, computes ``x ** 3``) is rewritten into multiplications by squaring.
TVM's ``tirx`` pow logs ``Warning: Detected pow(x, y) where y >= 3 ... uninteded behaviors when x < 0``
to the process's stderr for every such op (a raw library line on a quiet run), because targets may
lower a float ``pow`` as ``exp(y * log(x))``, which is NaN for a negative base; the products are exact
for every sign.

The rewrites are keyed on ops, dtypes and symbolic-ness of shapes only. No Relax
legalization override is needed for them; ``slmc.backend.legalize_overrides`` covers an unrelated
TVM 0.27 bug (``relax.full``/``relax.full_like`` with an infinite fill value).
"""

from __future__ import annotations

import copy
import operator
import sys

import sympy
import torch
from torch.fx import Graph, GraphModule, Node
from torch.fx.node import map_arg

__all__ = ["fix_exported_program"]

_aten = torch.ops.aten
_SCAN_OPS = (_aten.cumsum.default, _aten.cumprod.default)
_SLICE_OPS = (_aten.slice.Tensor,)
_DIFF_OPS = (_aten.diff.default,)
_POW_SCALAR = _aten.pow.Tensor_Scalar
_FLOAT_MATH_OPS = tuple(getattr(_aten, name).default for name in (
    "log", "log2", "log10", "log1p", "exp", "exp2", "expm1", "sqrt", "rsqrt", "sin", "cos", "tan", "tanh",
    "sigmoid", "erf", "atan", "asin", "acos", "sinh", "cosh", "reciprocal"))
_TRUE_DIVISION = (_aten.div.Tensor, _aten.div.Scalar)
MAX_EXPANDED_POWER = 8
_COMPARISON_OPS = tuple(
    getattr(getattr(_aten, name), overload)
    for name in ("eq", "ne", "lt", "le", "gt", "ge")
    for overload in ("Tensor", "Scalar")
)


# --------------------------------------------------------------------------- public API


def fix_exported_program(
    ep: torch.export.ExportedProgram,
) -> tuple[torch.export.ExportedProgram, list[str]]:
    """Return an equivalent ExportedProgram that TVM 0.27 can build, and notes on each rewrite.

    Preconditions: ``ep`` comes from ``torch.export.export`` (training or core-ATen IR), so
    every ``call_function`` node carries ``meta["val"]``. ``ep`` itself is not modified;
    the returned program shares its parameters, buffers and constants. When no rewrite
    applies, ``(ep, [])`` is returned unchanged.
    """
    gm = _copy_graph_module(ep.graph_module)
    graph = gm.graph
    notes: list[str] = []
    notes += _cast_scan_inputs_to_output_dtype(graph)
    notes += _decompose_symbolic_diff(graph)
    notes += _cast_bool_comparison_operands(graph)
    notes += _pin_symbolic_slice_shapes(graph)
    notes += _expand_integer_powers(graph)
    notes += _cast_integer_inputs_of_float_math(graph)
    if not notes:
        return ep, []
    graph.lint()
    gm.recompile()
    return _rebuild_exported_program(ep, gm), notes


# --------------------------------------------------------------------------- rewrites


def _cast_scan_inputs_to_output_dtype(graph: Graph) -> list[str]:
    """Make the dtype promotion of ``cumsum``/``cumprod`` explicit.

    Precondition: nodes carry ``meta["val"]``. For each scan whose input dtype differs from
    its output dtype (e.g. bool -> int64), insert ``aten._to_copy(x, dtype=out)`` on the
    input and drop a ``dtype`` kwarg, so TVM never scans in the narrower dtype.
    """
    notes = []
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _SCAN_OPS:
            continue
        src = node.args[0]
        in_dtype, out_dtype = _dtype_of(src), _dtype_of(node)
        if in_dtype is None or out_dtype is None or in_dtype == out_dtype:
            continue
        with graph.inserting_before(node):
            cast = _new_node(graph, _aten._to_copy.default, (src,), {"dtype": out_dtype})
        node.args = (cast, *node.args[1:])
        node.kwargs = {k: v for k, v in node.kwargs.items() if k != "dtype"}
        notes.append(
            f"{node.name}: {node.target.__name__} on {in_dtype} input; cast input to "
            f"{out_dtype} explicitly (TVM would scan in {in_dtype}; LLVM cannot add bools)"
        )
    return notes


def _cast_integer_inputs_of_float_math(graph: Graph) -> list[str]:
    """Give true division and ``log``/``exp``/``sqrt``/... of integer (or bool) tensors an explicit cast to
    their float output dtype; see "Integer inputs of float-valued math" in the module docstring."""
    notes = []
    for node in list(graph.nodes):
        true_division = node.target in _TRUE_DIVISION and node.kwargs.get("rounding_mode") is None
        if node.op != "call_function" or not (node.target in _FLOAT_MATH_OPS or true_division):
            continue
        out_dtype = _dtype_of(node)
        if out_dtype is None or not out_dtype.is_floating_point:
            continue
        operands = node.args[:2] if true_division else node.args[:1]
        integer = [i for i, a in enumerate(operands) if _dtype_of(a) is not None and not _dtype_of(a).is_floating_point]
        if not integer:
            continue
        args = list(node.args)
        with graph.inserting_before(node):
            for i in integer:
                args[i] = _new_node(graph, _aten._to_copy.default, (args[i],), {"dtype": out_dtype})
        node.args = tuple(args)
        notes.append(f"{node.name}: {node.target.__name__} of a {_dtype_of(node.args[integer[0]].args[0])} tensor; "
                     f"input cast to {out_dtype} explicitly (TVM keeps the integer dtype)")
    return notes


def _expand_integer_powers(graph: Graph) -> list[str]:
    """Replace ``pow(x, n)`` of a floating-point ``x`` and an integer ``3 <= n <= MAX_EXPANDED_POWER``
    by multiplications (square and multiply); see "Integer powers" in the module docstring."""
    notes = []
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not _POW_SCALAR:
            continue
        base, exponent = node.args[0], node.args[1]
        dtype = _dtype_of(base)
        if (dtype is None or not dtype.is_floating_point or isinstance(exponent, bool)
                or not isinstance(exponent, (int, float)) or exponent != int(exponent)
                or not 3 <= int(exponent) <= MAX_EXPANDED_POWER):
            continue
        with graph.inserting_before(node):
            result, square, n = None, base, int(exponent)
            while n:
                if n & 1:
                    result = square if result is None else _new_node(graph, _aten.mul.Tensor, (result, square))
                n >>= 1
                if n:
                    square = _new_node(graph, _aten.mul.Tensor, (square, square))
        node.replace_all_uses_with(result)
        graph.erase_node(node)
        notes.append(f"{node.name}: pow(x, {int(exponent)}) computed as products (TVM warns on pow with "
                     "an exponent >= 3: wrong for a negative base where pow lowers to exp(y * log(x)))")
    return notes


def _cast_bool_comparison_operands(graph: Graph) -> list[str]:
    """Compare bool tensors as uint8.

    Precondition: nodes carry ``meta["val"]``. TVM 0.27 gives ``bool`` its own DLPack type
    code, and LLVM codegen lowers comparisons of non-int/uint types as float compares
    (``fcmp`` on ``i1`` fails LLVM verification; ``<`` fails the kDLFloat check). For
    ``eq/ne/lt/le/gt/ge`` with a bool tensor operand, each bool tensor operand gets
    ``aten._to_copy(x, dtype=uint8)`` and a bool scalar becomes an int; the result (bool)
    and its values are unchanged since False < True matches 0 < 1.
    """
    notes = []
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _COMPARISON_OPS:
            continue
        if not any(_dtype_of(arg) == torch.bool for arg in node.args[:2]):
            continue
        new_args = []
        for arg in node.args:
            if _dtype_of(arg) == torch.bool:
                with graph.inserting_before(node):
                    arg = _new_node(graph, _aten._to_copy.default, (arg,), {"dtype": torch.uint8})
            elif isinstance(arg, bool):
                arg = int(arg)
            new_args.append(arg)
        node.args = tuple(new_args)
        notes.append(
            f"{node.name}: {node.target.__name__} on bool tensors; compared as uint8 "
            f"(TVM's LLVM codegen has no integer compare for bool)"
        )
    return notes


def _decompose_symbolic_diff(graph: Graph) -> list[str]:
    """Replace ``aten.diff`` along a symbolic dim by ``cat``/``slice``/``sub`` nodes.

    Precondition: nodes carry ``meta["val"]``. Only diffs whose concatenated length along
    ``dim`` is symbolic are rewritten (static ones build fine). The new slices are then
    shape-pinned by :func:`_pin_symbolic_slice_shapes`.
    """
    notes = []
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _DIFF_OPS:
            continue
        x, n, dim, prepend, append = _diff_args(node)
        parts = [p for p in (prepend, x, append) if p is not None]
        if n < 1 or all(isinstance(_size(p, dim), int) for p in parts):
            continue
        # torch.diff of bool tensors is logical xor (TVM cannot compare bools with ``!=``).
        step = _aten.logical_xor.default if _dtype_of(x) == torch.bool else _aten.sub.Tensor
        with graph.inserting_before(node):
            out = _new_node(graph, _aten.cat.default, (parts, dim)) if len(parts) > 1 else x
            for index in range(n):
                hi = _new_node(graph, _aten.slice.Tensor, (out, dim, 1, sys.maxsize))
                lo = _new_node(graph, _aten.slice.Tensor, (out, dim, 0, -1))
                if index < n - 1:
                    out = _new_node(graph, step, (hi, lo))
        # The last step reuses the diff node itself, so its name (maybe a graph output) stays.
        node.target, node.args, node.kwargs = step, (hi, lo), {}
        notes.append(
            f"{node.name}: aten.diff (n={n}) along symbolic dim {dim} decomposed into "
            f"cat/slice/{step.__name__.split('.')[0]} so the slice shapes can be pinned"
        )
    return notes


def _pin_symbolic_slice_shapes(graph: Graph) -> list[str]:
    """Follow each non-identity slice along a symbolic dim with a reshape to its torch shape.

    Precondition: nodes carry ``meta["val"]``. Relax's ``strided_slice`` infers sizes like
    ``T.min(1, s)`` that later ops cannot unify; the reshape restates PyTorch's size
    (``1``, ``s - 1``, ...). Slices whose output sizes are not integer polynomials of
    placeholder shape symbols are left alone.
    """
    notes = []
    sources = _symbol_sources(graph)
    symbol_nodes: dict[sympy.Symbol, Node] = {}
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _SLICE_OPS:
            continue
        if not _is_symbolic_nonidentity_slice(node) or _is_already_pinned(node):
            continue
        exprs = [_size_expr(size) for size in node.meta["val"].shape]
        if not all(_is_emittable(expr, sources) for expr in exprs):
            continue
        users = list(node.users)
        with graph.inserting_before(node.next):
            sizes = [_emit_size(graph, expr, sources, symbol_nodes) for expr in exprs]
            pinned = _new_node(graph, _aten.reshape.default, (node, sizes))
        for user in users:
            user.replace_input_with(node, pinned)
        notes.append(
            f"{node.name}: slice along symbolic dim {_slice_dim(node)}; reshaped to torch's "
            f"shape {list(node.meta['val'].shape)} (TVM strided_slice ignores symbol ranges)"
        )
    return notes


# --------------------------------------------------------------------------- helpers


def _copy_graph_module(gm: GraphModule) -> GraphModule:
    """Copy the graph (nodes and shallow-copied meta) into a new GraphModule sharing ``gm``'s attributes."""
    new_gm = GraphModule(gm, copy.deepcopy(gm.graph), class_name=type(gm).__name__)
    new_gm.meta.update(gm.meta)
    return new_gm


def _rebuild_exported_program(
    ep: torch.export.ExportedProgram, gm: GraphModule
) -> torch.export.ExportedProgram:
    """Wrap ``gm`` in a new ExportedProgram with ``ep``'s signature, state and constraints.

    Precondition: ``gm`` has the same placeholders as ``ep.graph_module`` and the same
    number of outputs, in the same order (an output node may have been replaced).
    """
    signature = copy.deepcopy(ep.graph_signature)
    (outputs,) = gm.graph.output_node().args
    for spec, output in zip(signature.output_specs, outputs):
        if isinstance(output, Node) and hasattr(spec.arg, "name"):
            spec.arg.name = output.name
    return torch.export.ExportedProgram(
        root=gm,
        graph=gm.graph,
        graph_signature=signature,
        state_dict=ep.state_dict,
        range_constraints=copy.deepcopy(ep.range_constraints),
        module_call_graph=copy.deepcopy(ep.module_call_graph),
        example_inputs=ep.example_inputs,
        constants=ep.constants,
        verifiers=ep.verifiers,
    )


def _new_node(graph: Graph, target, args: tuple, kwargs: dict | None = None) -> Node:
    """Create a call_function node at the graph's insertion point and fill ``meta["val"]``.

    Precondition: every Node in ``args``/``kwargs`` carries ``meta["val"]`` (FakeTensor,
    SymInt or int); the op is evaluated on those values to get the new node's value.
    """
    kwargs = kwargs or {}
    node = graph.call_function(target, args, kwargs)
    fake_args = map_arg(args, lambda n: n.meta["val"])
    fake_kwargs = map_arg(kwargs, lambda n: n.meta["val"])
    node.meta["val"] = target(*fake_args, **fake_kwargs)
    return node


def _dtype_of(node) -> torch.dtype | None:
    """dtype of a node whose ``meta["val"]`` is a tensor, else None."""
    if not isinstance(node, Node):
        return None
    val = node.meta.get("val")
    return val.dtype if isinstance(val, torch.Tensor) else None


def _size(node: Node, dim: int) -> int | torch.SymInt:
    """Size of ``node``'s tensor value along ``dim`` (int, or SymInt when symbolic)."""
    size = node.meta["val"].shape[dim]
    return size if isinstance(size, torch.SymInt) and not _is_constant(size) else int(size)


def _is_constant(size: torch.SymInt) -> bool:
    """True when a SymInt's expression has no free symbols."""
    return not size.node.expr.free_symbols


def _diff_args(node: Node) -> tuple[Node, int, int, Node | None, Node | None]:
    """Normalise ``aten.diff.default(self, n=1, dim=-1, prepend=None, append=None)`` arguments."""
    names = ("self", "n", "dim", "prepend", "append")
    defaults = {"n": 1, "dim": -1, "prepend": None, "append": None}
    values = dict(defaults, **dict(zip(names, node.args)), **node.kwargs)
    dim = values["dim"] % values["self"].meta["val"].dim()
    return values["self"], values["n"], dim, values["prepend"], values["append"]


def _slice_dim(node: Node) -> int:
    """Normalised dim of an ``aten.slice.Tensor(self, dim=0, start=None, end=None, step=1)`` node."""
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    return dim % node.args[0].meta["val"].dim()


def _is_symbolic_nonidentity_slice(node: Node) -> bool:
    """True for a slice along a symbolic dim that is not a full ``[0:]`` slice."""
    dim = _slice_dim(node)
    in_size = _size(node.args[0], dim)
    if isinstance(in_size, int):
        return False
    out_size = node.meta["val"].shape[dim]
    same_size = isinstance(out_size, torch.SymInt) and out_size.node.expr == in_size.node.expr
    return not same_size


def _is_already_pinned(node: Node) -> bool:
    """True when every user of ``node`` is a reshape/view (its shape is already restated)."""
    reshapes = (_aten.reshape.default, _aten.view.default)
    return bool(node.users) and all(user.target in reshapes for user in node.users)


def _size_expr(size: int | torch.SymInt) -> sympy.Expr:
    """A tensor dimension as an expanded sympy expression."""
    if isinstance(size, torch.SymInt):
        return sympy.expand(size.node.expr)
    return sympy.Integer(int(size))


def _symbol_sources(graph: Graph) -> dict[sympy.Symbol, tuple[Node, int]]:
    """Map each shape symbol to a (placeholder, dim) whose size is exactly that symbol."""
    sources: dict[sympy.Symbol, tuple[Node, int]] = {}
    for node in graph.find_nodes(op="placeholder"):
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        for dim, size in enumerate(val.shape):
            if isinstance(size, torch.SymInt) and isinstance(size.node.expr, sympy.Symbol):
                sources.setdefault(size.node.expr, (node, dim))
    return sources


def _is_emittable(expr: sympy.Expr, sources: dict[sympy.Symbol, tuple[Node, int]]) -> bool:
    """True for integer polynomials (``Add``/``Mul`` of integers and known symbols)."""
    if isinstance(expr, sympy.Integer):
        return True
    if isinstance(expr, sympy.Symbol):
        return expr in sources
    if isinstance(expr, (sympy.Add, sympy.Mul)):
        return all(_is_emittable(arg, sources) for arg in expr.args)
    return False


def _emit_size(graph: Graph, expr: sympy.Expr, sources, symbol_nodes: dict) -> int | Node:
    """Emit fx nodes computing ``expr`` at the insertion point; an int when it is constant.

    Precondition: ``_is_emittable(expr, sources)``. Symbols become ``aten.sym_size.int``
    nodes placed after the last placeholder (cached in ``symbol_nodes``); sums and products
    become ``operator.add``/``operator.mul`` nodes.
    """
    if isinstance(expr, sympy.Integer):
        return int(expr)
    if isinstance(expr, sympy.Symbol):
        return _symbol_node(graph, expr, sources, symbol_nodes)
    combine = operator.add if isinstance(expr, sympy.Add) else operator.mul
    operands = [_emit_size(graph, arg, sources, symbol_nodes) for arg in expr.args]
    operands.sort(key=lambda op: isinstance(op, int))  # a SymInt node on the left
    result = operands[0]
    for operand in operands[1:]:
        result = _new_node(graph, combine, (result, operand))
    return result


def _symbol_node(graph: Graph, symbol: sympy.Symbol, sources, symbol_nodes: dict) -> Node:
    """A ``sym_size`` node for ``symbol``, created once after the last placeholder."""
    if symbol not in symbol_nodes:
        placeholder, dim = sources[symbol]
        last_placeholder = list(graph.find_nodes(op="placeholder"))[-1]
        with graph.inserting_after(last_placeholder):
            symbol_nodes[symbol] = _new_node(graph, _aten.sym_size.int, (placeholder, dim))
    return symbol_nodes[symbol]


# --------------------------------------------------------------------------- relax.full
