"""``constant_folding``: evaluate subgraphs that depend only on weights and constants, ahead of time.

A node is folded when every input is a constant (a weight, a buffer or a literal), its op is
deterministic and does not mutate, and its result does not grow the stored weights by more than
``max_growth_bytes`` beyond what it frees. Folded results become new constant tensors; nodes that
would grow the weights are left alone and listed in the report (``slmc.graph.edit.fold_constants``).
"""

from __future__ import annotations

from pydantic import Field

from slmc.graph.edit import fold_constants
from slmc.graph.ir import Graph
from slmc.spec.pass_registry import PassConfig, PassContext, PassOutcome, register_pass


class ConstantFoldingConfig(PassConfig):
    max_growth_bytes: int = Field(65536, ge=0, le=1 << 40, description="allowed growth of stored weights per folded node")


@register_pass("constant_folding", config=ConstantFoldingConfig)
def constant_folding(graph: Graph, config: ConstantFoldingConfig, context: PassContext) -> PassOutcome:
    """Precompute nodes whose inputs are all constants; store their results as weights."""
    stats, skipped = fold_constants(graph, config.max_growth_bytes)
    return PassOutcome(graph, stats, skipped)
