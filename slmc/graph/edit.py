"""Graph edits several passes share: folding constant subgraphs into weights, and removing the
``get_attr`` nodes and tensors a rewrite left unread.

Preconditions: ``graph`` is an slmc ``Graph`` (``torch.export`` -> ``torch.fx``) whose weights are
attributes of ``graph.module`` read through ``get_attr`` nodes. Every function edits the graph in place.
"""

from __future__ import annotations

import torch
from torch import fx

from slmc.graph.ir import Graph, del_attr, fetch_attr, set_attr
from slmc.spec.pass_registry import Skip


def referenced_attributes(graph: Graph) -> set[str]:
    """Names of the module attributes some ``get_attr`` node reads."""
    return {str(n.target) for n in graph.graph.nodes if n.op == "get_attr"}


def remove_unused_tensors(graph: Graph) -> tuple[int, int]:
    """Delete parameters and buffers no ``get_attr`` reads; return (count, bytes) removed."""
    used = referenced_attributes(graph)
    module = graph.module
    unused = [
        (name, t)
        for name, t in list(module.named_parameters(remove_duplicate=False)) + list(module.named_buffers(remove_duplicate=False))
        if name not in used
    ]
    for name, _ in unused:
        del_attr(module, name)
    return len(unused), sum(t.numel() * t.element_size() for _, t in unused)


def drop_unused_weights(graph: Graph) -> tuple[int, int]:
    """Erase unread ``get_attr`` nodes, recompile, delete unread tensors; return (tensors, bytes) removed."""
    for node in reversed(list(graph.graph.nodes)):
        if node.op == "get_attr" and not node.users:
            graph.graph.erase_node(node)
    graph.module.recompile()
    return remove_unused_tensors(graph)


def _foldable_op(node: fx.Node) -> bool:
    target = node.target
    if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
        return False
    if target._schema.is_mutable or torch.Tag.nondeterministic_seeded in target.tags:
        return False
    return not node.is_impure()


def _constant_inputs(node: fx.Node, constants: set[fx.Node]) -> bool:
    return all(arg in constants for arg in node.all_input_nodes)


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _freed_bytes(node: fx.Node, module: fx.GraphModule) -> int:
    """Bytes of the weights that only this node reads (freed once it is folded)."""
    freed = 0
    for arg in node.all_input_nodes:
        if arg.op == "get_attr" and len(arg.users) == 1:
            value = fetch_attr(module, str(arg.target))
            if isinstance(value, torch.Tensor):
                freed += _tensor_bytes(value)
    return freed


def _evaluate(node: fx.Node, module: fx.GraphModule, values: dict[fx.Node, torch.Tensor]) -> object:
    def value_of(arg: object) -> object:
        if isinstance(arg, fx.Node):
            if arg not in values:
                values[arg] = fetch_attr(module, str(arg.target))
            return values[arg]
        return arg

    args = fx.node.map_aggregate(node.args, value_of)
    kwargs = fx.node.map_aggregate(node.kwargs, value_of)
    with torch.no_grad():
        return node.target(*args, **kwargs)


def fold_constants(graph: Graph, max_growth_bytes: int) -> tuple[dict[str, int], list[Skip]]:
    """Precompute nodes whose inputs are all constants and store their results as weights, then drop
    what became unread.

    A node is folded when every input is a constant (a weight, a buffer or a literal), its op is
    deterministic and does not mutate, and its result grows the stored weights by at most
    ``max_growth_bytes`` beyond what it frees; the others are returned as ``Skip`` with the growth.
    Returns ``({"nodes_folded", "tensors_removed", "bytes_removed"}, skipped)``.
    """
    module = graph.module
    constants: set[fx.Node] = {n for n in graph.graph.nodes if n.op == "get_attr"}
    values: dict[fx.Node, torch.Tensor] = {}
    folded, skipped = 0, []
    for node in list(graph.graph.nodes):
        if not (_foldable_op(node) and node.all_input_nodes and _constant_inputs(node, constants)):
            continue
        result = _evaluate(node, module, values)
        if not isinstance(result, torch.Tensor):
            continue
        growth = _tensor_bytes(result) - _freed_bytes(node, module)
        if growth > max_growth_bytes:
            skipped.append(Skip(node.name, f"folding would add {growth} bytes of weights (> max_growth_bytes)"))
            continue
        name = f"_folded_{node.name}"
        set_attr(module, name, result.detach().clone().contiguous())
        with graph.graph.inserting_before(node):
            replacement = graph.graph.get_attr(name)
        replacement.meta.update(node.meta)
        node.replace_all_uses_with(replacement)
        graph.graph.erase_node(node)
        constants.add(replacement)
        values[replacement] = result
        folded += 1
    tensors_removed, bytes_removed = drop_unused_weights(graph)
    return {"nodes_folded": folded, "tensors_removed": tensors_removed, "bytes_removed": bytes_removed}, skipped
