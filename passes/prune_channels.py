"""``prune_channels``: structured pruning of coupled MLP channels; the model physically shrinks.

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
(benchmarks/compression_latency.py). Attention heads are not pruned (their cache shapes are part of
the model's signature); groups other than element-wise-coupled linears are left alone.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from slmc.activations import linear_input_statistics
from slmc.ir import Graph, set_attr
from slmc.pass_registry import PassConfig, PassContext, PassOutcome, Skip, register_pass
from slmc.passes._channel_groups import ChannelGroup, channel_groups
from slmc.passes._cleanup import drop_unused_weights
from slmc.linears import matches


class PruneChannelsConfig(PassConfig):
    mlp_channels: float = Field(0.25, gt=0.0, lt=1.0, description="share of each group's channels to remove")
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


def _scores(graph: Graph, group: ChannelGroup, stats: dict, method: str) -> torch.Tensor:
    total = torch.zeros(group.channels, dtype=torch.float64)
    for consumer in group.consumers:
        column = consumer.weight(graph).detach().to(torch.float64)
        s = stats[consumer.node.name]
        if method == "flap":
            total += s.variance * column.square().sum(0)
        else:
            total += s.channel_norm * column.norm(dim=0)
    return total


def _shrink(graph: Graph, group: ChannelGroup, keep: torch.Tensor, stats: dict, compensate: bool) -> int:
    """Cut the group down to channels ``keep``; return the parameters removed."""
    before = sum(layer.weight(graph).numel() for layer in group.producers + group.consumers)
    removed = torch.ones(group.channels, dtype=torch.bool)
    removed[keep] = False
    for producer in group.producers:
        set_attr(graph.module, str(producer.weight_node.target), producer.weight(graph)[keep].contiguous())
        if producer.bias_node is not None:
            set_attr(graph.module, str(producer.bias_node.target), producer.bias(graph)[keep].contiguous())
    for consumer in group.consumers:
        weight = consumer.weight(graph)
        if compensate:
            shift = weight.detach().to(torch.float64)[:, removed] @ stats[consumer.node.name].mean[removed]
            bias = consumer.bias(graph)
            if bias is not None:
                set_attr(graph.module, str(consumer.bias_node.target), (bias.to(torch.float64) + shift).to(bias.dtype))
            else:
                target = f"{consumer.name}.bias"
                set_attr(graph.module, target, shift.to(weight.dtype))
                with graph.graph.inserting_before(consumer.node):
                    bias_node = graph.graph.get_attr(target)
                consumer.node.args = (consumer.node.args[0], consumer.node.args[1], bias_node)
        set_attr(graph.module, str(consumer.weight_node.target), weight[:, keep].contiguous())
    after = sum(layer.weight(graph).numel() for layer in group.producers + group.consumers)
    return before - after


@register_pass("prune_channels", config=PruneChannelsConfig, lossy=True)
def prune_channels(graph: Graph, config: PruneChannelsConfig, context: PassContext) -> PassOutcome:
    """Remove the least important channels of coupled MLP linears (FLAP / structured Wanda)."""
    if not context.calibration:
        raise ValueError("prune_channels needs calibration samples (the recipe's 'calibration' section)")
    groups, skipped = [], []
    for group in channel_groups(graph):
        names = [c.name for c in group.consumers]
        if all(matches(n, config.include, config.exclude) for n in names):
            groups.append(group)
        else:
            skipped.append(Skip(group.consumers[0].node.name, f"channel group of {names}: excluded by include/exclude patterns"))
    consumers = [c.node.name for g in groups for c in g.consumers]
    stats = linear_input_statistics(graph, context.calibration, consumers, hessian=False) if consumers else {}
    removed_params, kept_channels = 0, {}
    for group in groups:
        kept = _kept_count(group.channels, config.mlp_channels, config.multiple_of)
        scores = _scores(graph, group, stats, config.method)
        keep = torch.sort(torch.topk(scores, kept).indices).values
        removed_params += _shrink(graph, group, keep, stats, config.compensate_bias)
        kept_channels[group.consumers[0].name] = f"{kept}/{group.channels}"
    drop_unused_weights(graph)
    report = {"groups_pruned": len(groups), "parameters_removed": removed_params, "channels_kept": kept_channels,
              "heads_pruned": 0}
    return PassOutcome(graph, report, skipped)
