"""Coupled channels: which linear layers must lose the same output/input channels together.

A *channel group* is a set of producer linears whose outputs (last dimension ``d``) are combined
only by element-wise ops (activations, products, sums of same-shaped tensors, scalars) and then
read only as the input of consumer linears. Removing channel ``j`` removes row ``j`` of every
producer's weight (and bias) and column ``j`` of every consumer's weight, and the graph computes
exactly what it did on the remaining channels: a gated MLP (``gate``, ``up`` -> ``silu * `` ->
``down``) is one group; attention projections are not (their outputs are reshaped into heads) and
neither is anything that writes into the residual stream.

The groups are the connected components of a networkx graph whose vertices are the producers'
outputs and the element-wise ops between them; a component is kept only if it is closed (every
use of its values is inside it or the input of a consumer linear) and every producer and consumer
owns its weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import torch
from torch import fx

from slmc.graph.ir import Graph, set_attr
from slmc.graph.linears import LinearLayer, attribute_readers, as_linear_layer, is_linear, owns_weights

aten = torch.ops.aten
ELEMENTWISE_UNARY = {aten.silu.default, aten.gelu.default, aten.relu.default, aten.sigmoid.default, aten.tanh.default,
                     aten.neg.default}
ELEMENTWISE_BINARY = {aten.mul.Tensor, aten.add.Tensor, aten.sub.Tensor}


@dataclass(frozen=True)
class ChannelGroup:
    """Producers whose output channels, and consumers whose input channels, are pruned together."""

    producers: tuple[LinearLayer, ...]
    consumers: tuple[LinearLayer, ...]
    channels: int


def _elementwise(node: fx.Node) -> bool:
    if node.op != "call_function" or node.kwargs:
        return False
    if node.target in ELEMENTWISE_UNARY:
        return len(node.args) == 1 or (node.target is aten.gelu.default and len(node.args) <= 2)
    if node.target in ELEMENTWISE_BINARY:
        return len(node.args) == 2
    return False


def _shape(node: fx.Node) -> tuple | None:
    val = node.meta.get("val")
    return tuple(str(d) for d in val.shape) if isinstance(val, torch.Tensor) else None  # symbolic dims as text


def channel_groups(graph: Graph) -> list[ChannelGroup]:
    """Every closed channel group of the graph, in graph order of its first producer."""
    readers = attribute_readers(graph)
    linears = {n: as_linear_layer(graph, n) for n in graph.graph.nodes if is_linear(n)}
    coupling = nx.Graph()
    for node, layer in linears.items():
        if isinstance(layer, LinearLayer):
            coupling.add_node(node)
    for node in graph.graph.nodes:
        if not _elementwise(node):
            continue
        tensor_args = [a for a in node.args if isinstance(a, fx.Node)]
        coupling.add_node(node)
        for arg in tensor_args:
            if arg in coupling or _elementwise(arg):
                coupling.add_edge(node, arg)
    groups = []
    for component in nx.connected_components(coupling):
        group = _closed_group(component, linears, readers)
        if group is not None:
            groups.append(group)
    order = {n: i for i, n in enumerate(graph.graph.nodes)}
    return sorted(groups, key=lambda g: order[g.producers[0].node])


def _closed_group(component: set[fx.Node], linears: dict, readers: dict[str, int]) -> ChannelGroup | None:
    producers = [n for n in component if n in linears and isinstance(linears[n], LinearLayer)]
    region = [n for n in component if n not in linears]
    if not producers or not region:
        return None
    shapes = {_shape(n) for n in producers + region}
    if len(shapes) != 1 or None in shapes:
        return None  # broadcasting or unknown shapes: channels would not line up
    consumers = []
    region_set = set(region)
    for node in producers + region:
        for user in node.users:
            if user in region_set:
                continue
            layer = linears.get(user)
            if not isinstance(layer, LinearLayer) or user.args[0] is not node or node in user.args[1:]:
                return None
            consumers.append(layer)
    for node in region:
        if any(isinstance(a, fx.Node) and a not in component for a in node.args):
            return None  # a tensor from outside the group enters it
    if not consumers:
        return None
    layers = [linears[n] for n in producers] + consumers
    if not all(owns_weights(layer, readers) for layer in layers):
        return None
    order = sorted(producers, key=lambda n: n.name)
    return ChannelGroup(tuple(linears[n] for n in order), tuple(dict.fromkeys(consumers)), int(_shape(producers[0])[-1]))


def shrink_group(graph: Graph, group: ChannelGroup, keep: torch.Tensor, stats: dict, compensate: bool) -> int:
    """Cut the group down to channels ``keep`` (rows of the producers, columns of the consumers); with
    ``compensate``, add the removed columns' mean contribution (``stats``: consumer input statistics by
    node name) to each consumer's bias (FLAP). Returns the parameters removed."""
    before = sum(layer.weight(graph).numel() for layer in group.producers + group.consumers)
    removed = torch.ones(group.channels, dtype=torch.bool)
    removed[keep] = False
    for producer in group.producers:
        set_attr(graph.module, str(producer.weight_node.target), producer.weight(graph)[keep].contiguous())
        if producer.bias_node is not None:
            set_attr(graph.module, str(producer.bias_node.target), producer.bias(graph)[keep].contiguous())
    for consumer in group.consumers:
        weight = consumer.weight(graph)
        if compensate:
            shift = weight.detach().to(torch.float64)[:, removed] @ stats[consumer.node.name].mean[removed]
            bias = consumer.bias(graph)
            if bias is not None:
                set_attr(graph.module, str(consumer.bias_node.target), (bias.to(torch.float64) + shift).to(bias.dtype))
            else:
                target = f"{consumer.name}.bias"
                set_attr(graph.module, target, shift.to(weight.dtype))
                with graph.graph.inserting_before(consumer.node):
                    bias_node = graph.graph.get_attr(target)
                consumer.node.args = (consumer.node.args[0], consumer.node.args[1], bias_node)
        set_attr(graph.module, str(consumer.weight_node.target), weight[:, keep].contiguous())
    after = sum(layer.weight(graph).numel() for layer in group.producers + group.consumers)
    return before - after


def channel_scores(graph: Graph, group: ChannelGroup, stats: dict, method: str) -> torch.Tensor:
    """Importance of each channel to the consumers: ``flap`` ``Var(X_j) * ||W_:,j||^2`` (An et al., 2024),
    ``wanda_sp`` ``||X_j||_2 * ||W_:,j||_2``, summed over the consumers (``stats`` by node name)."""
    total = torch.zeros(group.channels, dtype=torch.float64)
    for consumer in group.consumers:
        column = consumer.weight(graph).detach().to(torch.float64)
        s = stats[consumer.node.name]
        if method == "flap":
            total += s.variance * column.square().sum(0)
        else:
            total += s.channel_norm * column.norm(dim=0)
    return total
