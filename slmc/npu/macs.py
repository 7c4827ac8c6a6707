"""The MACs one token costs in each op of the compiled graph: the NPU MAC fraction's denominator.

Two kinds of op do the model's multiply-accumulates:

- *linear-like* ops with a stored weight ``[N, ...]`` (float ``linear``, ``w8a8_linear``, int4
  ``quantized_linear``, ``w4a8_linear``): ``K * N`` per token, whatever the layer's storage (int4 codes
  pack ``8 / bits`` or 2 (w4a8) per byte). Only w8a8 linears can be NPU partitions;
- *attention* matmuls, activation x activation (``Q K^T`` and ``P V``: ``matmul``/``bmm`` nodes both
  of whose operands are computed from the graph's inputs). They stay on the CPU (the NPU partitions
  are linears), and their cost grows with the context: per query token ``heads * head_dim * keys``
  each. They are counted at ``context`` keys: every symbolic (sequence) dimension of the matmul
  other than the query rows is taken as ``context``. The NPU offload passes the report's
  ``totals.tokens`` (the calibration samples' sequence length, at which the partitions are compiled
  and verified), so the fraction is the share of a token's MACs at that length. The executed graph
  computes the full score matrix before the causal mask, so every query row costs ``context`` keys.

Matmuls with an operand computed from stored tensors only (``rotate``'s online Hadamard factors,
``n (m + p)`` MACs per token) are not counted: they are neither linears nor attention.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from math import prod

from torch import fx

from slmc.errors import NodeError
from slmc.graph.ir import Graph, fetch_attr, op_name

# MACs one token costs in a linear-like op, from its stored weight [N, ...] (the op's second argument):
# float and w8a8 weights are [N, K]; int4 codes pack 8 / bits (quantized_linear's bits argument) or 2 (w4a8) per byte
LINEAR_MACS = {
    "linear": lambda weight, node: weight.shape[0] * weight.shape[1],
    "w8a8_linear": lambda weight, node: weight.shape[0] * weight.shape[1],
    "quantized_linear": lambda weight, node: weight.shape[0] * weight.shape[1] * 8 // node.args[6],
    "w4a8_linear": lambda weight, node: weight.shape[0] * weight.shape[1] * 2,
}
ATTENTION_MATMULS = frozenset({"matmul", "bmm"})


@dataclass(frozen=True)
class ModelMacs:
    """MACs per token by node name: linear-like ops and attention matmuls (the latter at ``context`` keys)."""

    linear: dict[str, int]
    attention: dict[str, int]
    context: int

    @property
    def total(self) -> int:
        return sum(self.linear.values()) + sum(self.attention.values())

    def on(self, layers: Iterable[str]) -> int:
        """The MACs per token of the linear ``layers`` (each counted once)."""
        return sum(self.linear.get(name, 0) for name in set(layers))

    def fraction(self, layers: Iterable[str]) -> float:
        """The share of a token's MACs done by ``layers``."""
        total = self.total
        return self.on(layers) / total if total else 0.0

    def attention_summary(self) -> str:
        return (f"{len(self.attention)} attention matmuls (activation x activation, on the CPU) at {self.context} "
                f"tokens: {sum(self.attention.values()):,} MACs per token")


def linear_macs_per_token(graph: Graph) -> dict[str, int]:
    """``K * N`` of every linear-like node of ``graph`` (float, w8a8, int4, w4a8), by node name."""
    return {node.name: int(LINEAR_MACS[op_name(node)](fetch_attr(graph.module, str(node.args[1].target)), node))
            for node in graph.op_nodes() if op_name(node) in LINEAR_MACS}


def _input_dependent(graph: Graph) -> set[fx.Node]:
    """The nodes computed from the graph's inputs (placeholders), not from stored tensors (``get_attr``) alone."""
    dependent: set[fx.Node] = set()
    for node in graph.graph.nodes:  # topological order
        if node.op == "placeholder" or any(a in dependent for a in node.all_input_nodes):
            dependent.add(node)
    return dependent


def _is_attention_matmul(node: fx.Node, dependent: set[fx.Node]) -> bool:
    operands = node.args[:2]
    if op_name(node) not in ATTENTION_MATMULS or not all(isinstance(a, fx.Node) and a in dependent for a in operands):
        return False
    if not all("val" in a.meta for a in operands) or "val" not in node.meta:  # uncounted MACs would inflate the NPU share
        raise NodeError(node.name, "attention matmul without shape metadata (meta['val']): its MACs per token cannot be counted")
    return True


def _dimension(size: object, context: int) -> int:
    return size if isinstance(size, int) else context


def attention_macs_per_token(graph: Graph, context: int) -> dict[str, int]:
    """Per activation x activation matmul ``A [..., M, K] @ B [..., K, N]``: ``batch * K * N`` MACs per query
    row, symbolic ``K``/``N`` (the key count) taken as ``context``. Precondition: ``context >= 1``; batch
    dimensions are concrete (the causal-LM contract: batch 1)."""
    macs = {}
    dependent = _input_dependent(graph)
    for node in graph.op_nodes():
        if not _is_attention_matmul(node, dependent):
            continue
        left, right = (a.meta["val"].shape for a in node.args[:2])
        if len(left) < 2 or len(right) < 2:
            raise NodeError(node.name, f"attention matmul of shapes {list(left)} x {list(right)}: expected rank >= 2 operands")
        batch = node.meta["val"].shape[:-2]
        if not all(isinstance(b, int) for b in batch):
            raise NodeError(node.name, f"attention matmul with a symbolic batch dimension {list(batch)}: its MACs per token "
                                       "are not defined")
        macs[node.name] = prod(batch) * _dimension(left[-1], context) * _dimension(right[-1], context)
    return macs


def model_macs_per_token(graph: Graph, context: int) -> ModelMacs:
    """The linear-like ops' and the attention matmuls' MACs per token of ``graph``, attention at ``context`` keys."""
    return ModelMacs(linear=linear_macs_per_token(graph), attention=attention_macs_per_token(graph, context),
                     context=context)
