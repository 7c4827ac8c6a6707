"""``prune_channels``: structured pruning of coupled MLP channels and attention heads; the model physically shrinks.

Channel groups (``passes/_channel_groups.py``: a networkx dependency analysis of the fx graph)
are sets of linears that must lose the same channels together, e.g. a gated MLP's gate and up
rows with down's columns. In each selected group the ``mlp_channels`` share of channels with the
lowest importance on the calibration data is removed:

* ``flap``: ``Var(X_j) * ||W_:,j||^2`` summed over the consumers, with ``X_j`` the consumer input
  channel (An et al., 2024, "Fluctuation-based Adaptive Structured Pruning for Large Language
  Models", arXiv:2312.11983), and the removed channels' mean contribution ``W_:,removed @
  mean(X_removed)`` added to the consumer's bias (FLAP's bias compensation, ``compensate_bias``);
* ``wanda_sp``: ``||X_j||_2 * ||W_:,j||_2`` (the structured Wanda baseline of the FLAP paper).

Smaller weight matrices mean fewer parameters and multiply-adds; the compiled artifact is faster
(benchmarks/compression_latency.py). Groups other than element-wise-coupled linears are left alone.

With ``heads > 0`` that share of attention heads goes too, as whole KV groups ranked by the same
metric over the output projection's input channels (``passes/_head_pruning.py``): q/k/v rows,
output-projection columns and the KV cache's head dimension shrink together, in every layer alike
(the cache is one stacked tensor), so ``include``/``exclude`` select MLP groups only.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from slmc.graph.activations import linear_input_statistics
from slmc.graph.edit import drop_unused_weights
from slmc.graph.ir import Graph
from slmc.spec.pass_registry import PassConfig, PassContext, PassOutcome, Skip, register_pass
from slmc.passes._channel_groups import channel_groups, channel_scores, shrink_group
from slmc.passes._head_pruning import attention_heads, kept_groups, prune_heads
from slmc.graph.linears import matches


class PruneChannelsConfig(PassConfig):
    mlp_channels: float = Field(0.25, ge=0.0, lt=1.0, description="share of each group's channels to remove")
    heads: float = Field(0.0, ge=0.0, lt=1.0, description="share of attention heads to remove (whole KV groups, every layer)")
    method: Literal["flap", "wanda_sp"] = Field("flap", description="channel importance on calibration data")
    compensate_bias: bool = Field(True, description="add the removed channels' mean contribution to the consumer bias")
    multiple_of: int = Field(8, ge=1, le=4096, description="round the kept channel count down to a multiple of this")
    include: list[str] = Field(default_factory=lambda: ["*"], min_length=1, description="globs on the consumer layer names")
    exclude: list[str] = Field(default_factory=list, description="globs on the consumer layer names to leave alone")

    def needs_calibration(self) -> str | None:
        return f"method '{self.method}' ranks channels by calibration activations"


def _kept_count(channels: int, share: float, multiple_of: int) -> int:
    kept = int(round(channels * (1.0 - share)))
    return max((kept // multiple_of) * multiple_of, min(multiple_of, channels))


@register_pass("prune_channels", config=PruneChannelsConfig, lossy=True)
def prune_channels(graph: Graph, config: PruneChannelsConfig, context: PassContext) -> PassOutcome:
    """Remove the least important channels of coupled MLP linears and attention heads (FLAP / structured Wanda)."""
    if not context.calibration:
        raise ValueError("prune_channels needs calibration samples (the recipe's 'calibration' section)")
    groups, skipped = [], []
    for group in channel_groups(graph):
        names = [c.name for c in group.consumers]
        if all(matches(n, config.include, config.exclude) for n in names):
            groups.append(group)
        else:
            skipped.append(Skip(group.consumers[0].node.name, f"channel group of {names}: excluded by include/exclude patterns"))
    groups = groups if config.mlp_channels > 0 else []
    heads = attention_heads(graph) if config.heads > 0 else None
    kept_kv = kept_groups(heads, config.heads, graph) if heads is not None else 0
    consumers = [c.node.name for g in groups for c in g.consumers]
    consumers += [o.node.name for b in (heads.blocks if heads else []) for o in b.o_linears]
    stats = linear_input_statistics(graph, context.calibration, consumers, hessian=False) if consumers else {}
    removed_params, kept_channels = 0, {}
    for group in groups:
        kept = _kept_count(group.channels, config.mlp_channels, config.multiple_of)
        scores = channel_scores(graph, group, stats, config.method)
        keep = torch.sort(torch.topk(scores, kept).indices).values
        removed_params += shrink_group(graph, group, keep, stats, config.compensate_bias)
        kept_channels[group.consumers[0].name] = f"{kept}/{group.channels}"
    report = {"groups_pruned": len(groups), "channels_kept": kept_channels, "heads_pruned": 0}
    if heads is not None:
        report.update(prune_heads(graph, heads, kept_kv, stats, config.method, config.compensate_bias))
        removed_params += report.pop("head_parameters_removed")
    drop_unused_weights(graph)
    report["parameters_removed"] = removed_params
    return PassOutcome(graph, report, skipped)
