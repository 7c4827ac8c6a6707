"""Operator coverage: every op of the graph must be one the target executes.

A descriptor's ``ops.supported`` is ``all`` or a list of ATen op names in the short form
``slmc.graph.ir.op_name`` gives (``linear`` for ``aten.linear.default``, ``_to_copy`` for
``aten._to_copy.default``). For a CPU or GPU target there is nowhere else for an op to run, so an
op outside the list is bad input (``TargetError``, exit 2) naming the node, the op and the list.
A kind whose backend runs missing ops on the host CPU (``TargetKind.falls_back_to_host``: an NPU,
whose partitioning reports them as fallbacks) is not checked here. ``getitem`` (tuple indexing of
multi-output ops) is graph structure, not an op.

Precondition: ``graph`` is an ATen-level slmc ``Graph`` (after ``slmc.graph.ir.trace`` or a pass).
"""

from __future__ import annotations

from slmc.errors import FieldProblem, TargetError
from slmc.graph.ir import Graph, op_name
from slmc.spec.backend_registry import get_backend
from slmc.spec.target import TargetDescriptor

STRUCTURAL = frozenset({"getitem"})


def check_op_coverage(graph: Graph, target: TargetDescriptor, after: str) -> None:
    """Raise ``TargetError`` with one problem per unsupported op, naming the nodes that call it.

    ``after`` says which graph it is (``"tracing"``, ``"the recipe's passes"``) for the message.
    """
    if target.ops.supported == "all" or get_backend(target.kind).falls_back_to_host:
        return
    unsupported: dict[str, list[str]] = {}
    for node in graph.op_nodes():
        op = op_name(node)
        if op not in STRUCTURAL and not target.supports_op(op):
            unsupported.setdefault(op, []).append(node.name)
    problems = []
    for op, nodes in unsupported.items():
        more = f" and {len(nodes) - 1} more ({', '.join(nodes[1:4])}{', ...' if len(nodes) > 4 else ''})" if len(nodes) > 1 else ""
        problems.append(FieldProblem(
            "ops.supported",
            f"graph node '{nodes[0]}'{more} (after {after}) calls op '{op}', which target '{target.name}' does not "
            f"execute; it executes: {', '.join(sorted(target.ops.supported))}"))
    if problems:
        raise TargetError(f"target '{target.name}'", problems)
