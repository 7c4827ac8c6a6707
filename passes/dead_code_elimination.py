"""``dead_code_elimination``: remove pure nodes whose results are never used, and unused weights."""

from __future__ import annotations

from pydantic import Field

from slmc.graph.edit import remove_unused_tensors
from slmc.graph.ir import Graph
from slmc.spec.pass_registry import PassConfig, PassContext, PassOutcome, register_pass


class DeadCodeEliminationConfig(PassConfig):
    remove_unused_weights: bool = Field(True, description="also delete tensors no node reads any more")


@register_pass("dead_code_elimination", config=DeadCodeEliminationConfig)
def dead_code_elimination(graph: Graph, config: DeadCodeEliminationConfig, context: PassContext) -> PassOutcome:
    """Remove pure nodes with no users (to a fixed point), then the tensors nothing reads.

    Impure nodes (in-place ops, asserts, module calls such as export's guard check) are kept.
    """
    removed_nodes = 0
    changed = True
    while changed:
        changed = False
        for node in reversed(list(graph.graph.nodes)):
            if node.users or node.op in ("placeholder", "output", "call_module"):
                continue
            if node.op == "call_function" and node.is_impure():
                continue
            graph.graph.erase_node(node)
            removed_nodes += 1
            changed = True
    graph.module.recompile()
    stats = {"nodes_removed": removed_nodes, "tensors_removed": 0, "bytes_removed": 0}
    if config.remove_unused_weights:
        stats["tensors_removed"], stats["bytes_removed"] = remove_unused_tensors(graph)
    return PassOutcome(graph, stats)
