"""Linear layers of a traced graph: finding them, naming them, selecting them by glob pattern.

A *linear layer* is an ``aten.linear.default(x, weight, bias?)`` node whose weight (and bias, when
present) is a ``get_attr`` node, i.e. a stored 2-D tensor ``[out_features, in_features]``. Its
*name* is the weight's attribute path without a trailing ``.weight``
(``model.model.layers.0.self_attn.q_proj``), which is what recipes' ``include``/``exclude`` glob
patterns match. A linear whose weight is computed at run time (e.g. widened from float16 by
``cast_weights``) is not a linear layer: passes that need stored weights report it as skipped.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import fx

from slmc.graph.ir import Graph, fetch_attr
from slmc.spec.pass_registry import Skip

LINEAR = torch.ops.aten.linear.default


@dataclass(frozen=True)
class LinearLayer:
    """One linear node with stored weights. ``bias`` is ``None`` when the linear has no bias."""

    node: fx.Node
    weight_node: fx.Node
    bias_node: fx.Node | None
    name: str

    def weight(self, graph: Graph) -> torch.Tensor:
        return fetch_attr(graph.module, str(self.weight_node.target))

    def bias(self, graph: Graph) -> torch.Tensor | None:
        return None if self.bias_node is None else fetch_attr(graph.module, str(self.bias_node.target))

    @property
    def input(self) -> fx.Node:
        return self.node.args[0]  # type: ignore[return-value]


def layer_name(weight_target: str) -> str:
    """``a.b.q_proj.weight`` -> ``a.b.q_proj``; other attribute paths are their own name."""
    return weight_target.removesuffix(".weight")


def is_linear(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target is LINEAR


def _bias_arg(node: fx.Node) -> object:
    if len(node.args) > 2:
        return node.args[2]
    return node.kwargs.get("bias")


def as_linear_layer(graph: Graph, node: fx.Node) -> LinearLayer | str:
    """The ``LinearLayer`` of a linear node, or the reason it is not one (weight not stored, not 2-D)."""
    weight = node.args[1]
    if not isinstance(weight, fx.Node) or weight.op != "get_attr":
        return "weight is computed at run time, not a stored tensor"
    value = fetch_attr(graph.module, str(weight.target))
    if not isinstance(value, torch.Tensor) or value.ndim != 2 or not value.is_floating_point():
        return "weight is not a 2-D floating-point tensor"
    bias = _bias_arg(node)
    if bias is not None and (not isinstance(bias, fx.Node) or bias.op != "get_attr"):
        return "bias is computed at run time, not a stored tensor"
    return LinearLayer(node, weight, bias, layer_name(str(weight.target)))


def linear_layers(graph: Graph) -> tuple[list[LinearLayer], list[tuple[fx.Node, str]]]:
    """Every linear node in graph order: the linear layers, and ``(node, reason)`` for the others."""
    layers, others = [], []
    for node in graph.graph.nodes:
        if is_linear(node):
            found = as_linear_layer(graph, node)
            if isinstance(found, LinearLayer):
                layers.append(found)
            else:
                others.append((node, found))
    return layers, others


def matches(name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """``name`` matches one ``include`` glob and no ``exclude`` glob (``fnmatch``, case-sensitive)."""
    included = any(fnmatch.fnmatchcase(name, p) for p in include)
    return included and not any(fnmatch.fnmatchcase(name, p) for p in exclude)


def attribute_readers(graph: Graph) -> dict[str, int]:
    """How many node uses read each attribute path (over every ``get_attr`` node of the path)."""
    counts: dict[str, int] = {}
    for node in graph.graph.nodes:
        if node.op == "get_attr":
            counts[str(node.target)] = counts.get(str(node.target), 0) + len(node.users)
    return counts


def owns_weights(layer: LinearLayer, readers: dict[str, int]) -> bool:
    """The layer is the only reader of its weight and bias (so rewriting them changes nothing else)."""
    targets = [layer.weight_node] + ([layer.bias_node] if layer.bias_node is not None else [])
    return all(readers.get(str(n.target), 0) == 1 for n in targets)


def selected_layers(graph: Graph, include: Sequence[str], exclude: Sequence[str], action: str,
                    allow_shared: bool = False) -> tuple[list[LinearLayer], list[LinearLayer], list[Skip]]:
    """All linear layers, those matching ``include``/``exclude`` that own their weights (or, with
    ``allow_shared``, also those whose weight other nodes read: a pass that gives the layer its own
    new weight and leaves the shared one in place), and a ``Skip`` (reason prefixed
    ``"linear not {action}"``) for every other linear node."""
    layers, others = linear_layers(graph)
    readers = attribute_readers(graph)
    skipped = [Skip(node.name, f"linear not {action}: {reason}") for node, reason in others]
    selected = []
    for layer in layers:
        if not matches(layer.name, include, exclude):
            skipped.append(Skip(layer.node.name, f"{layer.name}: excluded by include/exclude patterns"))
        elif not allow_shared and not owns_weights(layer, readers):
            skipped.append(Skip(layer.node.name, f"{layer.name}: its weight is shared with other nodes"))
        else:
            selected.append(layer)
    return layers, selected, skipped
