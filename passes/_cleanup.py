"""Removing what a rewrite left behind: ``get_attr`` nodes nothing reads, and their tensors."""

from __future__ import annotations

from slmc.graph.ir import Graph
from slmc.passes.dead_code_elimination import remove_unused_tensors


def drop_unused_weights(graph: Graph) -> tuple[int, int]:
    """Erase unread ``get_attr`` nodes, recompile, delete unread tensors; return (tensors, bytes) removed."""
    for node in reversed(list(graph.graph.nodes)):
        if node.op == "get_attr" and not node.users:
            graph.graph.erase_node(node)
    graph.module.recompile()
    return remove_unused_tensors(graph)
