"""Where rotations can be folded in an fx graph: the residual stream (R1) and the value heads (R2).

The *residual stream* (QuaRot, Ashkboos et al., 2024, arXiv:2404.00456, Section 4.1) starts at the
token embedding and runs through the residual adds to the output head. A rotation ``x -> x Q`` of it
is exact when every op on it commutes with ``Q``: the adds (whose other operand is a linear output,
rotated on its output side, or another embedding lookup, rotated by rows), dtype casts, views that
keep the channel dimension, slices over tokens, products with per-token scalars (RMSNorm's
``x * rsqrt(mean(x²) + eps)``) and the sums of squares over channels (``||x Q|| = ||x||``). Linears
reading it absorb ``Qᵀ`` on their input side. Anything else that reads it (a per-channel scale, the
mean subtraction of LayerNorm, an activation, the graph output) is a ``NodeError`` naming the node:
folding would not be exact there.

A *value head* (SpinQuant's R2, Liu et al., 2024, arXiv:2405.16406, Section 3) is the output of a
linear reshaped to ``[..., heads, head_dim]`` that reaches an attention ``matmul`` as its second
operand with ``head_dim`` last (so it is multiplied by the attention probabilities, never contracted
over ``head_dim`` like keys, and passes no RoPE); the heads of that matmul's result merge
``[..., n, head_dim] -> [..., n * head_dim]`` into output projections. A per-head rotation then folds
into the value linear's output rows and the output projection's input columns.

Precondition: ``meta["val"]`` on every node (``slmc.graph.ir.check_graph``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch
from torch import fx

from slmc.errors import NodeError
from slmc.graph.ir import Graph, op_name
from slmc.graph.linears import LinearLayer, as_linear_layer, is_linear

aten = torch.ops.aten
SAME_VALUES = {aten.clone.default, aten.contiguous.default, aten.alias.default, aten._to_copy.default, aten.to.dtype,
               aten.to.dtype_layout, aten.to.device, aten.detach.default}  # the graph is float32: casts keep values
RESHAPES = {aten.view.default, aten.reshape.default, aten._unsafe_view.default}
SHAPE_ONLY = {aten._assert_tensor_metadata.default, aten.sym_size.int}  # read shape/dtype, never values
REDUCTIONS = {aten.mean.dim, aten.sum.dim_IntList}
MATMULS = {aten.matmul.default, aten.bmm.default}


def _shape(node: fx.Node) -> tuple:
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        raise NodeError(node.name, "no shape information (meta['val']); run check_graph first")
    return tuple(val.shape)


def _dim(dim: object, rank: int) -> int:
    return int(dim) % rank


def _keeps_values(node: fx.Node) -> bool:
    """A cast, copy or alias, or an inference-mode dropout (``train=False``): the identity on values."""
    if node.target is aten.type_as.default:  # a cast to another tensor's dtype (float32 -> float32 here)
        return True
    if node.target is aten.dropout.default:
        return len(node.args) > 2 and node.args[2] is False
    return node.target in SAME_VALUES


def _arg(node: fx.Node, index: int, default: object) -> object:
    return node.args[index] if len(node.args) > index else default


def _is_tensor(arg: object) -> bool:
    return isinstance(arg, fx.Node) and isinstance(arg.meta.get("val"), torch.Tensor)


@dataclass
class ResidualStream:
    """What a residual-stream rotation changes: embedding tables (rows), linears reading the stream
    (input side), linears writing into it (output side); ``nodes``: every node carrying rotated values."""

    embeddings: list[fx.Node] = field(default_factory=list)
    readers: list[LinearLayer] = field(default_factory=list)
    writers: list[LinearLayer] = field(default_factory=list)
    nodes: set[fx.Node] = field(default_factory=set)


class _StreamWalk:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.found = ResidualStream()
        self.queue: deque[fx.Node] = deque()
        self.done: set[tuple[fx.Node, fx.Node]] = set()

    def mark(self, node: fx.Node) -> None:
        if node not in self.found.nodes:
            self.found.nodes.add(node)
            self.queue.append(node)

    def run(self, embedding: fx.Node) -> ResidualStream:
        self.found.embeddings.append(embedding)
        self.mark(embedding)
        while self.queue:
            node = self.queue.popleft()
            for user in list(node.users):
                if (node, user) not in self.done:
                    self.done.add((node, user))
                    self.visit(user, node)
        return self.found

    def visit(self, user: fx.Node, node: fx.Node) -> None:
        target = user.target
        if user.op == "output":
            raise NodeError(node.name, "the residual stream is a graph output: rotating it would change the output")
        if target in SHAPE_ONLY:
            return
        if is_linear(user) and user.args[0] is node and node not in user.args[1:]:
            layer = as_linear_layer(self.graph, user)
            if isinstance(layer, str):
                raise NodeError(user.name, f"reads the residual stream but cannot absorb the rotation: {layer}")
            if layer not in self.found.readers:
                self.found.readers.append(layer)
            return
        if target is aten.type_as.default and user.args[0] is not node:
            return  # the stream only lends its dtype
        if _keeps_values(user) or (target in RESHAPES and _shape(user)[-1:] == _shape(node)[-1:]):
            self.mark(user)
        elif target in (aten.slice.Tensor, aten.select.int) and _dim(_arg(user, 1, 0), len(_shape(node))) != len(_shape(node)) - 1:
            self.mark(user)
        elif target is aten.add.Tensor and len(user.args) == 2 and all(_is_tensor(a) for a in user.args):
            for other in user.args:
                if other not in self.found.nodes:
                    self.stream_source(other, user)
            self.mark(user)
        elif target is aten.pow.Tensor_Scalar and user.args[0] is node and user.args[1] == 2:
            self.squares(user)
        elif target in (aten.mul.Tensor, aten.div.Tensor) and len(user.args) == 2:
            self.product(user, node)
        elif target is aten.rms_norm.default:
            weight = user.args[2] if len(user.args) > 2 else user.kwargs.get("weight")
            if weight is not None:
                raise NodeError(user.name, "rms_norm with a weight that was not folded into the following linears")
            self.mark(user)
        elif target in (aten.layer_norm.default, aten.native_layer_norm.default):
            raise NodeError(user.name, "LayerNorm subtracts the mean over channels, which a rotation does not preserve "
                                       "(QuaRot first folds the mean subtraction into the preceding linears; not done here)")
        else:
            raise NodeError(user.name, f"{op_name(user)} reads the residual stream and does not commute with a rotation")

    def product(self, user: fx.Node, node: fx.Node) -> None:
        """``x * r`` / ``x / r``: exact for a per-token (last dim 1) or scalar ``r``; ``x * x`` is a square."""
        a, b = user.args
        if user.target is aten.mul.Tensor and a is node and b is node:
            self.squares(user)
            return
        if user.target is aten.div.Tensor and b is node:
            raise NodeError(user.name, "divides by the residual stream")
        other = b if a is node else a
        if isinstance(other, (int, float)):
            self.mark(user)
            return
        if other in self.found.nodes:
            raise NodeError(user.name, "multiplies two residual-stream tensors elementwise")
        shape = _shape(other)
        if len(shape) == 0 or shape[-1] == 1:
            self.mark(user)
            return
        raise NodeError(user.name, f"multiplies the residual stream by {other.name} of shape {list(shape)}, which varies "
                                   "over channels (an RMSNorm weight that could not be folded?)")

    def squares(self, node: fx.Node) -> None:
        """Elementwise squares of the stream: only their sum or mean over channels is rotation invariant."""
        rank = len(_shape(node))
        for user in node.users:
            dims = user.args[1] if len(user.args) > 1 else None
            if user.target not in REDUCTIONS or not isinstance(dims, (list, tuple)) or \
                    sorted(_dim(d, rank) for d in dims) != [rank - 1]:
                raise NodeError(user.name, f"uses the squared residual stream ({node.name}) other than summed over channels")

    def stream_source(self, other: fx.Node, add: fx.Node) -> None:
        """The non-stream operand of a residual add: a linear's output (through casts and views) or an
        embedding lookup; they join the stream (and their other users are checked)."""
        path = [other]
        node = other
        while node not in self.found.nodes and _channel_preserving_input(node) is not None:
            node = _channel_preserving_input(node)
            path.append(node)
        if node in self.found.nodes:
            pass  # another branch of the stream (casts or views of it)
        elif is_linear(node):
            layer = as_linear_layer(self.graph, node)
            if isinstance(layer, str):
                raise NodeError(node.name, f"writes into the residual stream but cannot absorb the rotation: {layer}")
            if layer.input in self.found.nodes and layer not in self.found.readers:
                self.found.readers.append(layer)
            self.found.writers.append(layer)
        elif node.op == "call_function" and node.target is aten.embedding.default and isinstance(node.args[0], fx.Node) \
                and node.args[0].op == "get_attr":
            self.found.embeddings.append(node)
        else:
            raise NodeError(add.name, f"adds {other.name} ({op_name(node)}) to the residual stream; only linear outputs and "
                                      "embedding lookups can be rotated")
        for step in reversed(path):
            self.mark(step)


def _channel_preserving_input(node: fx.Node) -> fx.Node | None:
    """The input of ``node`` when ``node`` commutes with a rotation of its channels: a cast, a view keeping
    the last dim, or a product with / division by a scalar (Granite's residual multiplier); else None."""
    if node.op != "call_function" or not node.args or not _is_tensor(node.args[0]):
        return None
    source = node.args[0]
    if _keeps_values(node) or (node.target in RESHAPES and _shape(node)[-1:] == _shape(source)[-1:]):
        return source if len(node.all_input_nodes) == 1 else None
    if node.target in (aten.mul.Tensor, aten.div.Tensor) and len(node.args) == 2:
        scale = node.args[1]
        if isinstance(scale, (int, float)) or (_is_tensor(scale) and len(_shape(scale)) == 0):
            return source
    return None


def residual_stream(graph: Graph, embedding: fx.Node) -> ResidualStream:
    """The residual stream that starts at the token ``embedding`` lookup; ``NodeError`` where a rotation
    of it would not be exact."""
    return _StreamWalk(graph).run(embedding)


@dataclass
class ValueHeads:
    """One attention block's value linear(s) and output projection(s) with ``head_dim``."""

    values: list[LinearLayer]
    outputs: list[LinearLayer]
    head_dim: int


def _axis_after(user: fx.Node, node: fx.Node, axis: int) -> int | None:
    """Where ``node``'s axis ``axis`` is in ``user``'s result, or None if ``user`` mixes or moves it unknowingly."""
    target, rank = user.target, len(_shape(node))
    if target in SAME_VALUES:
        return axis
    if target is aten.transpose.int and user.args[0] is node:
        a, b = _dim(user.args[1], rank), _dim(user.args[2], rank)
        return b if axis == a else a if axis == b else axis
    if target is aten.unsqueeze.default:
        d = _dim(user.args[1], rank + 1)
        return axis + (1 if d <= axis else 0)
    if target is aten.slice.Tensor and _dim(_arg(user, 1, 0), rank) != axis:
        return axis
    if target is aten.select.int and _dim(user.args[1], rank) != axis:
        return axis - (1 if _dim(user.args[1], rank) < axis else 0)
    if target is aten.expand.default and _shape(user)[axis - rank] == _shape(node)[axis]:
        return axis + len(_shape(user)) - rank
    if target is aten.cat.default and node in user.args[0]:
        dim = _dim(user.args[1] if len(user.args) > 1 else 0, rank)
        return axis if dim != axis and all(_is_cache_input(p) for p in user.args[0] if p is not node) else None
    if target in RESHAPES and axis == rank - 1 and _shape(user)[-1:] == _shape(node)[-1:]:
        return len(_shape(user)) - 1
    return None


def _is_cache_input(node: object) -> bool:
    """A slice of a graph input (the KV cache a previous step of this graph wrote)."""
    while isinstance(node, fx.Node) and node.op == "call_function" and \
            (node.target in (aten.select.int, aten.slice.Tensor) or node.target in SAME_VALUES):
        node = node.args[0]
    return isinstance(node, fx.Node) and node.op == "placeholder"


def _value_matmuls(start: fx.Node) -> list[fx.Node] | str:
    """The attention matmuls ``start`` (head_dim last) reaches as the values, or why it is not a value path."""
    matmuls, stack = [], [(start, len(_shape(start)) - 1)]
    while stack:
        node, axis = stack.pop()
        rank = len(_shape(node))
        for user in node.users:
            if user.op == "output" or user.target in SHAPE_ONLY:
                continue
            if user.target is aten.stack.default and all(u.op == "output" for u in user.users):
                continue  # the cache output: holds the rotated values the next step reads back
            if user.target in MATMULS:
                if user.args[1] is node and user.args[0] is not node and axis == rank - 1:
                    matmuls.append(user)
                    continue
                return f"{user.name} contracts over head_dim (queries or keys)"
            after = _axis_after(user, node, axis)
            if after is None:
                return f"{op_name(user)} {user.name} acts on head_dim"
            stack.append((user, after))
    return matmuls if matmuls else "reaches no attention matmul"


def _merged_outputs(graph: Graph, matmul: fx.Node, head_dim: int) -> list[LinearLayer] | str:
    """The output projections reading the merged heads of ``matmul`` (head_dim last), or why not."""
    found, stack = [], [(matmul, len(_shape(matmul)) - 1, False)]
    while stack:
        node, axis, merged = stack.pop()
        rank = len(_shape(node))
        for user in node.users:
            if merged and is_linear(user) and user.args[0] is node:
                layer = as_linear_layer(graph, user)
                if isinstance(layer, str):
                    return f"output projection {user.name}: {layer}"
                found.append(layer)
                continue
            if merged and user.target in SAME_VALUES:
                stack.append((user, axis, True))
                continue
            out = _shape(user) if _is_tensor(user) else ()
            if not merged and user.target in RESHAPES and axis == rank - 1 and len(out) == rank - 1 \
                    and out[:-1] == _shape(node)[:-2] and out[-1] == _shape(node)[-2] * head_dim:
                stack.append((user, rank - 2, True))
                continue
            after = None if merged else _axis_after(user, node, axis)
            if after is None or user.target is aten.cat.default:
                return f"{op_name(user)} {user.name} uses the attention output other than merging heads into a linear"
            stack.append((user, after, False))
    return found if found else "the heads reach no output projection"


def _head_split(graph: Graph, layer: LinearLayer) -> fx.Node | None:
    """The reshape ``[..., n * D] -> [..., n, D]`` of the layer's output, when that is its only use."""
    users = list(layer.node.users)
    if len(users) != 1 or users[0].target not in RESHAPES:
        return None
    before, after = _shape(layer.node), _shape(users[0])
    if len(after) == len(before) + 1 and after[:-2] == before[:-1] and after[-2] * after[-1] == before[-1]:
        return users[0]
    return None


def merges_heads(node: fx.Node) -> bool:
    """``node`` reshapes ``[..., heads, head_dim]`` into ``[..., heads * head_dim]`` (an attention output)."""
    if node.op != "call_function" or node.target not in RESHAPES:
        return False
    before, after = _shape(node.args[0]), _shape(node)
    return len(before) >= 3 and len(after) == len(before) - 1 and after[:-1] == before[:-2] and before[-2] > 1


def value_heads(graph: Graph, layers: list[LinearLayer]) -> tuple[list[ValueHeads], dict[str, str]]:
    """The value/output-projection pairs among ``layers``, and ``{output projection node: reason}`` for every
    linear reading merged heads that gets no value rotation."""
    blocks: dict[tuple[str, ...], ValueHeads] = {}
    for layer in layers:
        split = _head_split(graph, layer)
        if split is None:
            continue
        matmuls = _value_matmuls(split)
        if isinstance(matmuls, str):
            continue  # queries and keys (RoPE, contraction over head_dim)
        head_dim = int(_shape(split)[-1])
        outputs: list[LinearLayer] = []
        for matmul in matmuls:
            found = _merged_outputs(graph, matmul, head_dim)
            if isinstance(found, str):
                outputs = []
                break
            outputs += [o for o in found if o not in outputs]
        if outputs:
            key = tuple(o.node.name for o in outputs)
            block = blocks.setdefault(key, ValueHeads([], outputs, head_dim))
            block.values.append(layer)
    covered = {o.node.name for b in blocks.values() for o in b.outputs}
    missed = {l.node.name: "reads merged attention heads, but no value projection was traced to it" for l in layers
              if merges_heads(l.input) and l.node.name not in covered}
    return list(blocks.values()), missed
