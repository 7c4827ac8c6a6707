"""Structured removal of attention heads: whole KV groups, so the KV cache shrinks with the model.

The unit is a *KV group*: one KV head with the ``n_rep`` query heads that read it (one head in
multi-head attention). Removing a group removes its rows of the q, k and v projections (and
biases), its columns of the output projection, its slice of the KV-cache inputs and outputs, and
rewrites every literal head count in ``view``/``reshape``/``expand`` sizes (analysis in
``passes/_attention_heads.py``). Removing query heads inside a group instead would keep the cache
but cannot reach 25% on a model with two query heads per KV head; whole groups can, and the cache
memory per token drops by the same share.

Importance is FLAP's fluctuation metric over the output projection's input channels of the
group's query heads, ``sum_j Var(X_j) * ||W_o[:, j]||^2`` (An et al., 2024, "Fluctuation-based
Adaptive Structured Pruning for Large Language Models", arXiv:2312.11983, which ranks heads by
the same metric as MLP channels), or its ``wanda_sp`` variant; removed heads' mean output is
added to the output projection's bias (FLAP's compensation). A head whose output-projection
columns are zero scores 0 and is removed exactly. Head importance from calibration activations
follows Michel et al., 2019 ("Are Sixteen Heads Really Better than One?", NeurIPS) and
LLM-Pruner (Ma et al., 2023, arXiv:2305.11627) in pruning attention at head granularity.

Under the causal-LM contract (``slmc.graph.kv_cache``) every layer's cache slice is stacked
into one ``[L, 1, H_kv, P, D]`` tensor, so every layer keeps the same number of KV groups (which
groups differs per layer); the cache placeholders' shapes and the graph's example inputs follow.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from slmc.errors import NodeError
from slmc.graph.ir import Graph
from slmc.passes._attention_heads import CACHE_INPUTS, HeadBlock, Heads, attention_heads
from slmc.passes._channel_groups import ChannelGroup, channel_scores, shrink_group


def kept_groups(heads: Heads, share: float, graph: Graph) -> int:
    """KV groups each block keeps when ``share`` of the heads go; ``NodeError`` if none would remain."""
    if not heads.blocks:
        raise NodeError(_output(graph).name, "head pruning found no attention: no linear output is reshaped into "
                        "heads [..., n, head_dim] and merged back into an output projection")
    counts = {b.kv_heads for b in heads.blocks}
    if len(counts) != 1:
        raise NodeError(heads.blocks[0].o_linears[0].node.name, f"attention blocks have different KV head counts {sorted(counts)}")
    total = counts.pop()
    kept = int(round(total * (1.0 - share)))
    if kept < 1:
        raise NodeError(heads.blocks[0].o_linears[0].node.name,
                        f"removing {share:g} of {total} KV head groups per layer leaves none; use a smaller 'heads' share")
    return kept


def _output(graph: Graph) -> fx.Node:
    return next(n for n in graph.graph.nodes if n.op == "output")


def output_channels(block: HeadBlock, groups: torch.Tensor) -> torch.Tensor:
    """Output-projection input channels (query heads x head_dim) of KV groups ``groups``."""
    heads = (groups[:, None] * block.n_rep + torch.arange(block.n_rep)[None, :]).flatten()
    return (heads[:, None] * block.head_dim + torch.arange(block.head_dim)[None, :]).flatten()


def _kv_channels(block: HeadBlock, groups: torch.Tensor) -> torch.Tensor:
    return (groups[:, None] * block.head_dim + torch.arange(block.head_dim)[None, :]).flatten()


def group_scores(graph: Graph, block: HeadBlock, stats: dict, method: str) -> torch.Tensor:
    """Importance of each KV group of ``block`` (sum over its query heads' output channels)."""
    q_channels = block.kv_heads * block.n_rep * block.head_dim
    per_channel = channel_scores(graph, ChannelGroup((), tuple(block.o_linears), q_channels), stats, method)
    return per_channel.reshape(block.kv_heads, -1).sum(1)


def prune_heads(graph: Graph, heads: Heads, kept: int, stats: dict, method: str, compensate: bool) -> dict[str, Any]:
    """Keep the ``kept`` most important KV groups of every block; returns the report entries."""
    removed_params, kept_heads = 0, {}
    new_count: dict[int, tuple[int, int]] = {}  # space representative -> (heads before, heads after)
    for block in heads.blocks:
        groups = torch.sort(torch.topk(group_scores(graph, block, stats, method), kept).indices).values
        q_group = ChannelGroup(tuple(block.q_linears), tuple(block.o_linears), block.kv_heads * block.n_rep * block.head_dim)
        removed_params += shrink_group(graph, q_group, output_channels(block, groups), stats, compensate)
        kv_group = ChannelGroup(tuple(block.kv_linears), (), block.kv_heads * block.head_dim)
        removed_params += shrink_group(graph, kv_group, _kv_channels(block, groups), stats, False)
        kept_heads[block.name] = [int(g) for g in groups]
        new_count[block.q_space] = (block.kv_heads * block.n_rep, kept * block.n_rep)
        new_count.update({kv: (block.kv_heads, kept) for kv in block.kv_spaces})
    for literal in heads.literals:
        before, after = new_count[heads.space_of[literal.space]]
        sizes = list(literal.node.args[1])
        if sizes[literal.position] != before * literal.per_head:
            raise NodeError(literal.node.name, f"size {sizes[literal.position]} at position {literal.position} is not "
                            f"{before * literal.per_head} (heads x {literal.per_head})")
        sizes[literal.position] = after * literal.per_head
        literal.node.args = (literal.node.args[0], sizes, *literal.node.args[2:])
    _shrink_cache_inputs(graph, kept)
    graph.module.recompile()
    blocks = heads.blocks
    return {"heads_pruned": sum((b.kv_heads - kept) * b.n_rep for b in blocks),
            "kv_heads_kept": f"{kept}/{blocks[0].kv_heads}", "head_groups_kept": kept_heads,
            "head_parameters_removed": removed_params}


def _shrink_cache_inputs(graph: Graph, kept: int) -> None:
    """The KV-cache placeholders ``[L, 1, H_kv, P, D]`` and their example inputs now hold ``kept`` heads;
    the guard function ``torch.export`` attached (checking the old shapes) is dropped."""
    placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
    inputs = list(graph.example_inputs)
    for index, (node, name) in enumerate(zip(placeholders, graph.input_names)):
        if name not in CACHE_INPUTS:
            continue
        val = node.meta["val"]
        with val.fake_mode:
            node.meta["val"] = val.narrow(2, 0, kept).clone()
        inputs[index] = inputs[index].narrow(2, 0, kept).clone()
    graph.example_inputs = tuple(inputs)
    for node in list(graph.graph.nodes):  # torch.export's input-shape guards state the old head count
        if node.op == "call_module" and node.target == "_guards_fn" and not node.users:
            graph.graph.erase_node(node)
            delattr(graph.module, "_guards_fn")  # re-derived when ``slmc.graph.ir.export`` re-traces


__all__ = ["attention_heads", "kept_groups", "prune_heads"]
