"""Attention heads in the fx graph: which weights, cache slices and shape literals belong to a head.

Every tensor that carries a *head axis* is tracked forward from where heads appear: the outputs
of linears reshaped to ``[..., n, D]`` (q/k/v projections) and the per-layer slices of the
causal-LM KV cache inputs (``past_keys[i]``, ``past_values[i]``). Each tracked tensor lives in a
*head space*; ops that combine tracked tensors (element-wise ops, ``cat``, batched ``matmul``)
put their spaces into one (a networkx graph over the spaces; its connected components are the
spaces of the model). The GQA repetition ``unsqueeze -> expand(n_rep) -> reshape`` links a KV
space to a query space with ``n_rep`` query heads per KV head; the merge ``[..., n, D] -> [...,
n*D]`` that feeds a linear (the output projection) ends a query space. Any other use of a tracked
tensor (an op that mixes heads, a reduction over them, an unknown op) is a ``NodeError`` naming
the node, so head pruning never guesses.

A ``HeadBlock`` (one attention layer) is a KV space, a query space, the linears producing each,
the output projection, the KV-cache slices and the integer literals (in ``view``/``reshape``/
``expand`` sizes) that state a head count. Removing KV head ``g`` removes query heads
``g*n_rep .. g*n_rep + n_rep - 1`` (the order of Hugging Face's ``repeat_kv``, which is what the
unsqueeze/expand/reshape above computes).

Precondition: ``meta["val"]`` is set on every node (``slmc.graph.ir.check_graph``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import torch
from torch import fx

from slmc.graph.kv_cache_fit import CACHE_INPUTS
from slmc.errors import NodeError
from slmc.graph.ir import Graph, op_name
from slmc.graph.linears import LinearLayer, as_linear_layer, attribute_readers, is_linear, owns_weights

aten = torch.ops.aten
ELEMENTWISE = {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor, aten.neg.default,
               aten.contiguous.default, aten.clone.default, aten.dropout.default, aten._to_copy.default,
               aten.alias.default, aten.silu.default, aten.exp.default, aten.to.dtype}
RESHAPES = {aten.view.default, aten.reshape.default, aten._unsafe_view.default}


@dataclass(frozen=True)
class Track:
    space: int
    axis: int
    repeat: int = 1  # an expanded (GQA) dim of this size right after the head axis


@dataclass
class Literal:
    """An int in a size list that states a head count (or heads * head_dim) of ``space``."""

    node: fx.Node
    position: int
    space: int
    per_head: int = 1


@dataclass
class HeadBlock:
    """One attention layer: ``kv_heads`` KV heads, ``n_rep`` query heads per KV head, ``head_dim``."""

    kv_spaces: tuple[int, ...]
    q_space: int
    n_rep: int
    head_dim: int
    kv_heads: int
    q_linears: list[LinearLayer] = field(default_factory=list)
    kv_linears: list[LinearLayer] = field(default_factory=list)
    o_linears: list[LinearLayer] = field(default_factory=list)
    cache_layer: int | None = None

    @property
    def name(self) -> str:
        return self.o_linears[0].name


def _shape(node: fx.Node) -> tuple:
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        raise NodeError(node.name, "no shape information (meta['val']); run check_graph first")
    return tuple(val.shape)


def _ints(sizes: object) -> list:
    return list(sizes) if isinstance(sizes, (list, tuple)) else []


class _Analysis:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.track: dict[fx.Node, Track] = {}
        self.spaces = nx.Graph()
        self.heads: dict[int, int] = {}  # space -> head count
        self.head_dim: dict[int, int] = {}
        self.producers: dict[int, list[LinearLayer]] = {}
        self.outputs: dict[int, list[LinearLayer]] = {}
        self.repeats: list[tuple[int, int, int]] = []  # (kv space, q space, n_rep)
        self.cache: dict[int, list[tuple[str, int]]] = {}
        self.literals: list[Literal] = []
        self.cache_outputs: list[fx.Node] = []
        self.readers = attribute_readers(graph)
        self.linears = {n: as_linear_layer(graph, n) for n in graph.graph.nodes if is_linear(n)}

    def new_space(self, heads: int, head_dim: int) -> int:
        space = self.spaces.number_of_nodes()
        self.spaces.add_node(space)
        self.heads[space], self.head_dim[space] = heads, head_dim
        return space

    def join(self, node: fx.Node, tracks: list[Track]) -> Track:
        first = tracks[0]
        for other in tracks[1:]:
            if other.axis != first.axis or other.repeat != first.repeat:
                raise NodeError(node.name, f"{op_name(node)} combines tensors whose head axes differ ({first.axis} vs {other.axis})")
            if self.heads[other.space] != self.heads[first.space]:
                raise NodeError(node.name, f"{op_name(node)} combines {self.heads[first.space]} heads with {self.heads[other.space]}")
            self.spaces.add_edge(first.space, other.space)
        return first

    # -- seeds ---------------------------------------------------------------------------------
    def seed(self, node: fx.Node) -> None:
        if node.op != "call_function":
            return
        if node.target is aten.select.int and isinstance(node.args[0], fx.Node) and node.args[0].op == "placeholder":
            name = self._input_name(node.args[0])
            if name in CACHE_INPUTS and node.args[1] == 0:
                shape = _shape(node.args[0])
                space = self.new_space(int(shape[2]), int(shape[4]))
                self.track[node] = Track(space, 1)
                self.cache.setdefault(space, []).append((name, int(node.args[2])))
            return
        if node.target in RESHAPES and node.args[0] in self.linears and node not in self.track:
            layer = self.linears[node.args[0]]
            before, after = _shape(node.args[0]), _shape(node)
            if (isinstance(layer, LinearLayer) and len(after) == len(before) + 1 and after[:-2] == before[:-1]
                    and isinstance(after[-1], int) and isinstance(after[-2], int) and after[-2] * after[-1] == before[-1]
                    and owns_weights(layer, self.readers)):
                space = self.new_space(int(after[-2]), int(after[-1]))
                self.producers[space] = [layer]
                self.track[node] = Track(space, len(after) - 2)
                self._literal(node, len(after) - 2, space)

    def _input_name(self, placeholder: fx.Node) -> str | None:
        names = self.graph.input_names
        index = [n for n in self.graph.graph.nodes if n.op == "placeholder"].index(placeholder)
        return names[index] if index < len(names) else None

    def _literal(self, node: fx.Node, position: int, space: int, per_head: int = 1) -> None:
        sizes = _ints(node.args[1] if len(node.args) > 1 else None)
        if position < len(sizes) and isinstance(sizes[position], int) and sizes[position] != -1:
            self.literals.append(Literal(node, position, space, per_head))

    # -- propagation ---------------------------------------------------------------------------
    def visit(self, node: fx.Node) -> None:
        tracked = [a for a in _tensor_args(node) if a in self.track]
        if not tracked:
            self.seed(node)
            return
        if node.op == "output":
            if tracked:
                raise NodeError(tracked[0].name, "a tensor with a head axis is a graph output without stacking into the cache")
            return
        target = node.target
        tracks = [self.track[a] for a in tracked]
        out_rank = len(_shape(node)) if isinstance(node.meta.get("val"), torch.Tensor) else None
        if target is aten._assert_tensor_metadata.default and node.kwargs.get("size") is None:
            return  # checks dtype/device/layout only
        if target is aten.sym_size.int:
            if _dim(node.args[1], len(_shape(node.args[0]))) == tracks[0].axis:
                raise NodeError(node.name, "reads the size of the head axis")
            return
        if target in ELEMENTWISE or (target is aten.softmax.int and _dim(node.args[1], out_rank) != tracks[0].axis):
            track = self.join(node, tracks)
            for arg in _tensor_args(node):
                if arg not in self.track:
                    self._broadcast_ok(node, arg, track.axis, out_rank)
            self.track[node] = track
        elif target is aten.transpose.int:
            axis, rank = tracks[0].axis, out_rank
            a, b = _dim(node.args[1], rank), _dim(node.args[2], rank)
            if tracks[0].repeat != 1 and (a in (axis, axis + 1) or b in (axis, axis + 1)):
                raise NodeError(node.name, "moves a repeated (GQA) head axis")
            self.track[node] = Track(tracks[0].space, b if axis == a else a if axis == b else axis, tracks[0].repeat)
        elif target is aten.unsqueeze.default:
            d = _dim(node.args[1], out_rank)
            self.track[node] = Track(tracks[0].space, tracks[0].axis + (1 if d <= tracks[0].axis else 0), tracks[0].repeat)
        elif target in (aten.slice.Tensor, aten.select.int):
            dim = _dim(node.args[1], len(_shape(node.args[0])))
            if dim == tracks[0].axis or (tracks[0].repeat != 1 and dim == tracks[0].axis + 1):
                raise NodeError(node.name, f"{op_name(node)} over the head axis")
            drop = target is aten.select.int and dim < tracks[0].axis
            self.track[node] = Track(tracks[0].space, tracks[0].axis - drop, tracks[0].repeat)
        elif target is aten.cat.default:
            dim = _dim(node.args[1] if len(node.args) > 1 else 0, out_rank)
            parts = node.args[0]
            if any(p not in self.track for p in parts) or dim == tracks[0].axis:
                raise NodeError(node.name, "cat mixes tensors with and without a head axis, or concatenates heads")
            self.track[node] = self.join(node, [self.track[p] for p in parts])
        elif target in (aten.matmul.default, aten.bmm.default):
            if len(tracked) != 2 or tracks[0].axis >= out_rank - 2:
                raise NodeError(node.name, "matmul over the head axis or with an untracked operand")
            self.track[node] = self.join(node, tracks)
        elif target is aten.expand.default:
            self._expand(node, tracks[0])
        elif target in RESHAPES:
            self._reshape(node, tracks[0])
        elif target is aten.stack.default:  # the KV-cache outputs: [L, ...] of each layer's keys (values)
            dim = node.args[1] if len(node.args) > 1 else 0
            if dim != 0 or any(p not in self.track for p in node.args[0]) or any(u.op != "output" for u in node.users):
                raise NodeError(node.name, "stack of head tensors that is not a KV-cache output")
            self.cache_outputs.append(node)
        else:
            raise NodeError(node.name, f"{op_name(node)} on a tensor with a head axis is not understood by head pruning")

    def _broadcast_ok(self, node: fx.Node, arg: fx.Node, axis: int, out_rank: int) -> None:
        shape = _shape(arg)
        aligned = axis - (out_rank - len(shape))
        if aligned >= 0 and shape[aligned] != 1:
            raise NodeError(node.name, f"{op_name(node)} mixes the heads with '{arg.name}', which varies along the head axis")

    def _expand(self, node: fx.Node, track: Track) -> None:
        before, after = _shape(node.args[0]), _shape(node)
        axis = track.axis
        if track.repeat != 1 or len(before) <= axis + 1 or before[axis + 1] != 1 or not isinstance(after[axis + 1], int):
            raise NodeError(node.name, "expand of a head tensor that is not a GQA repetition (unsqueeze then expand)")
        if any(b != a for i, (b, a) in enumerate(zip(before, after)) if i != axis + 1 and b != 1):
            raise NodeError(node.name, "expand changes more than the repetition dim")
        self._literal(node, axis, track.space)
        self.track[node] = Track(track.space, axis, int(after[axis + 1]))

    def _reshape(self, node: fx.Node, track: Track) -> None:
        before, after = _shape(node.args[0]), _shape(node)
        axis = track.axis
        if track.repeat != 1:  # [.., kv, n_rep, ..] -> [.., kv * n_rep, ..]: a query space
            if after[:axis] != before[:axis] or after[axis + 1:] != before[axis + 2:]:
                raise NodeError(node.name, "reshape of a repeated (GQA) head tensor that does not merge the repetition")
            q_space = self.new_space(self.heads[track.space] * track.repeat, self.head_dim[track.space])
            self.repeats.append((track.space, q_space, track.repeat))
            self._literal(node, axis, q_space)
            self.track[node] = Track(q_space, axis)
            return
        if axis == len(before) - 2 and len(after) == len(before) - 1 and after[:-1] == before[:-2]:
            for user in node.users:  # [.., n, D] -> [.., n*D]: must feed output projections only
                layer = self.linears.get(user)
                if not isinstance(layer, LinearLayer) or user.args[0] is not node or not owns_weights(layer, self.readers):
                    raise NodeError(user.name, f"the merged heads of '{node.name}' feed {op_name(user)}, not an output projection")
                self.outputs.setdefault(track.space, []).append(layer)
            self._literal(node, len(after) - 1, track.space, per_head=self.head_dim[track.space])
            return
        raise NodeError(node.name, "reshape of a tensor with a head axis that neither merges heads nor a GQA repetition")


def _tensor_args(node: fx.Node) -> list[fx.Node]:
    found = []
    for arg in node.args:
        if isinstance(arg, fx.Node):
            found.append(arg)
        elif isinstance(arg, (list, tuple)):
            found.extend(a for a in arg if isinstance(a, fx.Node))
    return [a for a in found if isinstance(a.meta.get("val"), torch.Tensor)]


def _dim(dim: object, rank: int) -> int:
    return int(dim) % rank


@dataclass
class Heads:
    """The attention blocks of a graph and what pruning them must also change."""

    blocks: list[HeadBlock]
    literals: list[Literal]
    space_of: dict[int, int]  # every space -> its component's representative
    cache_outputs: list[fx.Node]


def attention_heads(graph: Graph) -> Heads:
    """Every attention block of ``graph``; ``NodeError`` at a node whose use of heads is not understood."""
    analysis = _Analysis(graph)
    for node in graph.graph.nodes:
        analysis.visit(node)
    space_of = {}
    for component in nx.connected_components(analysis.spaces):
        rep = min(component)
        space_of.update({s: rep for s in component})
    merged = _merge(analysis, space_of)
    kv_reps = {space_of[kv] for kv, _, _ in analysis.repeats}
    blocks = []
    for rep, (producers, outputs, cache) in merged.items():
        if rep in kv_reps:
            continue  # a KV space (keys or values): described by the block of its query space
        if not outputs:
            raise NodeError(producers[0].node.name if producers else "<graph>", "heads that never reach an output projection")
        repeat = [(space_of[kv], n) for kv, q, n in analysis.repeats if space_of[q] == rep]
        if repeat:  # GQA: the keys' and the values' spaces lose the same KV heads
            if len({n for _, n in repeat}) != 1 or len({analysis.heads[kv] for kv, _ in repeat}) != 1:
                raise NodeError(outputs[0].node.name, "the keys and values of one attention block repeat differently")
            kv_spaces = tuple(dict.fromkeys(kv for kv, _ in repeat))
            kv_producers = [layer for kv in kv_spaces for layer in merged[kv][0]]
            kv_cache = [entry for kv in kv_spaces for entry in merged[kv][2]]
            block = HeadBlock(kv_spaces, rep, repeat[0][1], analysis.head_dim[rep], analysis.heads[kv_spaces[0]],
                              producers, kv_producers, outputs, _layer(kv_cache, outputs[0]))
        else:  # one head per KV head: query, key and value heads share one space
            block = HeadBlock((rep,), rep, 1, analysis.head_dim[rep], analysis.heads[rep], [], producers, outputs,
                              _layer(cache, outputs[0]))
        blocks.append(block)
    return Heads(blocks, analysis.literals, space_of, analysis.cache_outputs)


def _merge(analysis: _Analysis, space_of: dict[int, int]) -> dict[int, tuple[list, list, list]]:
    merged: dict[int, tuple[list, list, list]] = {}
    for space, rep in space_of.items():
        producers, outputs, cache = merged.setdefault(rep, ([], [], []))
        producers.extend(analysis.producers.get(space, []))
        outputs.extend(analysis.outputs.get(space, []))
        cache.extend(analysis.cache.get(space, []))
    return merged


def _layer(cache: list[tuple[str, int]], output: LinearLayer) -> int | None:
    layers = {i for _, i in cache}
    if len(layers) > 1 or (cache and {n for n, _ in cache} != set(CACHE_INPUTS)):
        raise NodeError(output.node.name, f"one attention block reads cache slices {sorted(cache)}")
    return layers.pop() if layers else None
