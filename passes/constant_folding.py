"""``constant_folding``: evaluate subgraphs that depend only on weights and constants, ahead of time.

A node is folded when every input is a constant (a weight, a buffer or a literal), its op is
deterministic and does not mutate, and its result does not grow the stored weights by more than
``max_growth_bytes`` beyond what it frees. Folded results become new constant tensors; nodes that
would grow the weights are left alone and listed in the report.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import fx

from slmc.graph.ir import Graph, fetch_attr, set_attr
from slmc.spec.pass_registry import PassConfig, PassContext, PassOutcome, Skip, register_pass
from slmc.passes.dead_code_elimination import remove_unused_tensors


class ConstantFoldingConfig(PassConfig):
    max_growth_bytes: int = Field(65536, ge=0, le=1 << 40, description="allowed growth of stored weights per folded node")


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


@register_pass("constant_folding", config=ConstantFoldingConfig)
def constant_folding(graph: Graph, config: ConstantFoldingConfig, context: PassContext) -> PassOutcome:
    """Precompute nodes whose inputs are all constants; store their results as weights."""
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
        if growth > config.max_growth_bytes:
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
    for node in reversed(list(graph.graph.nodes)):
        if node.op == "get_attr" and not node.users:
            graph.graph.erase_node(node)
    module.recompile()
    tensors_removed, bytes_removed = remove_unused_tensors(graph)
    stats = {"nodes_folded": folded, "tensors_removed": tensors_removed, "bytes_removed": bytes_removed}
    return PassOutcome(graph, stats, skipped)
