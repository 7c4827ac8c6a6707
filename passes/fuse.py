"""``fuse``: exact graph-level fusions that help on every target.

In order: fold constant subgraphs (``constant_folding``); fold inference BatchNorm into the
preceding convolution or linear; fold norm scales (RMSNorm, LayerNorm incl. its shift) into the
linears they feed; merge sibling linears that read the same input (Q/K/V, gate/up) into one
linear and a split. Every step is an algebraic identity (``passes/_affine_folding.py``,
``passes/_sibling_merge.py``), so the output changes only by float rounding (measured on the
fixture and tiny-lm: well under 1e-5 relative). Whatever matches a pattern but cannot be fused
exactly is listed in the report with the reason.

Sibling merging is off by default. With the dlight schedules of early 2026-11-21 the fixture LM's
float artifact with merged Q/K/V and gate/up ran 5-9% slower on ``host`` (prefill of 128 tokens
and decode steps, ``benchmarks/compression_latency.py``). With slmc's tiled int4 kernels
(SmolLM-135M shape, after ``quantize``, ``examples/recipes/int4-g32-rtn-fused.yaml``) the evidence
is mixed: one interleaved in-process run measured decode 6.0 -> 5.3 ms per token, two separate
``slmc bench`` runs 4.30 ms unmerged and 4.76 ms merged (docs/benchmarks.md). Turn it on per
recipe and measure.
"""

from __future__ import annotations

from pydantic import Field

from slmc.graph.edit import drop_unused_weights, fold_constants
from slmc.graph.ir import Graph
from slmc.spec.pass_registry import PassConfig, PassContext, PassOutcome, register_pass
from slmc.passes._affine_folding import fold_batch_norms, fold_norm_scales
from slmc.passes._sibling_merge import merge_siblings


class FuseConfig(PassConfig):
    fold_constants: bool = Field(True, description="precompute subgraphs of constants (as constant_folding)")
    max_growth_bytes: int = Field(65536, ge=0, le=1 << 40, description="constant folding: allowed weight growth per folded node")
    fold_batch_norm: bool = Field(True, description="fold inference BatchNorm into the preceding conv/linear")
    fold_norms: bool = Field(True, description="fold RMSNorm/LayerNorm affine parameters into the following linears")
    merge_siblings: bool = Field(False, description="merge linears reading the same input (Q/K/V, gate/up) into one "
                                                    "(off by default: measured slower on host, see below)")


@register_pass("fuse", config=FuseConfig)
def fuse(graph: Graph, config: FuseConfig, context: PassContext) -> PassOutcome:
    """Fold constants, BatchNorms and norm scales into weights; merge sibling linears (exact)."""
    stats: dict[str, int] = {}
    skipped = []
    if config.fold_constants:
        folding, found = fold_constants(graph, config.max_growth_bytes)
        stats["constants_folded"] = folding["nodes_folded"]
        skipped += found
    if config.fold_batch_norm:
        stats["batch_norms_folded"], found = fold_batch_norms(graph)
        skipped += found
    if config.fold_norms:
        stats["norm_scales_folded"], found = fold_norm_scales(graph)
        skipped += found
    if config.merge_siblings:
        stats["sibling_groups_merged"], stats["linears_merged"], found = merge_siblings(graph)
        skipped += found
    stats["tensors_removed"], stats["bytes_removed"] = drop_unused_weights(graph)
    return PassOutcome(graph, stats, skipped)
