"""Ops that stay on the CPU for an NPU target, each with the reason, in the descriptor's vocabulary.

Every op node of the compiled graph that is not an offloaded ``w8a8_linear`` runs on the CPU. The
reason is the first that applies: graph bookkeeping (``sym_size``, ``_assert_tensor_metadata``);
the op is not in the target's ``ops.supported``; a ``linear`` the
recipe left in float (offloading needs full-integer quantization); or an op the NPU executes in int8
but which slmc does not quantize to integer (slmc's integer lowering covers linears only), so it
computes in float32. Fallbacks are grouped by op and reason with a count and the first nodes.
"""

from __future__ import annotations

from typing import Any

from slmc.graph.ir import Graph, op_name
from slmc.graph.op_coverage import STRUCTURAL
from slmc.spec.target import TargetDescriptor

OFFLOADED_OP = "w8a8_linear"
SHOWN_NODES = 5


BOOKKEEPING = frozenset({"_assert_tensor_metadata", "sym_size"})  # export's shape/metadata checks: no data


def _reason(op: str, target: TargetDescriptor) -> str:
    if op in BOOKKEEPING:
        return "graph bookkeeping (shape or metadata check): no computation to offload"
    if op == "w8a8_linear":
        return "int8 linear not offloaded: 'linear' is not in the NPU's ops.supported"
    if not target.supports_op(op):
        return f"'{op}' is not in the NPU's ops.supported"
    if op == "linear":
        return "float linear: the recipe did not quantize it to w8a8 (offloading needs full-integer quantization)"
    return (f"'{op}' is executable by the NPU in int8, but slmc full-integer quantizes linears only: "
            "this op computes in float32 on the CPU")


def cpu_fallbacks(graph: Graph, target: TargetDescriptor) -> list[dict[str, Any]]:
    """``[{op, reason, count, nodes}]`` for every op node that is not offloaded."""
    groups: dict[tuple[str, str], list[str]] = {}
    offload_linear = target.supports_op("linear")
    for node in graph.op_nodes():
        op = op_name(node)
        if op in STRUCTURAL or (op == OFFLOADED_OP and offload_linear):
            continue
        groups.setdefault((op, _reason(op, target)), []).append(node.name)
    return [{"op": op, "reason": reason, "count": len(nodes), "nodes": nodes[:SHOWN_NODES]}
            for (op, reason), nodes in sorted(groups.items())]
