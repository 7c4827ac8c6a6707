"""``lowrank``: replace a linear layer ``y = W x + b`` by two of rank ``r``: ``y = A (B x) + b``.

``W`` (``[out, in]``) becomes ``B`` (``[r, in]``, attribute ``<layer>.lowrank_in.weight``) and
``A`` (``[out, r]``, ``<layer>.lowrank_out.weight``); the bias stays on the second linear. Only
ranks with ``r (out + in) < out * in`` are used, so every factorized layer stores fewer
parameters and does fewer multiply-adds per token; a layer that would need a larger rank stays
dense and is listed in the report with the rank it would need.

Methods (``passes/_lowrank_factor.py``): ``svd`` (plain truncated SVD) and ``svd_llm``
(truncation-aware whitening with the Cholesky factor of the calibration ``X^T X``; Wang et al.,
2024, arXiv:2403.07378), which needs the recipe's calibration data. With ``sequential: true``
(default) each layer is whitened with the inputs it receives once the layers before it are
factorized (``slmc.graph.activations.calibrate_sequentially``), so errors do not compound unseen.

Ranks (``passes/_rank_allocation.py``): exactly one of ``energy`` (per layer, keep this share of
the squared singular values) or ``ratio`` (remove this share of the parameters of all linear
layers of the graph; ``allocation: uniform``, the default, takes the same share from every
selected layer, as SVD-LLM does; ``global`` spreads it by the layers' spectra).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import fx

from slmc.graph.activations import InputStatistics, calibrate_sequentially, linear_input_statistics
from slmc.graph.edit import drop_unused_weights
from slmc.graph.ir import Graph, set_attr
from slmc.graph.linears import LINEAR, LinearLayer, selected_layers
from slmc.spec.pass_registry import PassConfig, PassContext, PassOutcome, Skip, register_pass
from slmc.passes._lowrank_factor import factorize, max_useful_rank, singular_values, whitening_factor
from slmc.passes._rank_allocation import Candidate, by_energy, global_budget, uniform


class LowRankConfig(PassConfig):
    method: Literal["svd", "svd_llm"] = Field("svd_llm", description="plain SVD, or SVD-LLM whitening with calibration data")
    ratio: float | None = Field(None, gt=0.0, lt=1.0, description="share of all linear-layer parameters to remove")
    energy: float | None = Field(None, gt=0.0, lt=1.0, description="per layer: share of squared singular values to keep")
    allocation: Literal["uniform", "global"] = Field("uniform", description="with ratio: how the budget is spread over layers")
    include: list[str] = Field(default_factory=lambda: ["*"], min_length=1, description="glob patterns of layer names")
    exclude: list[str] = Field(default_factory=list, description="glob patterns of layer names to keep dense")
    damping: float = Field(1e-4, gt=0.0, le=1.0, description="svd_llm: added to diag(X^T X), relative to its mean")
    sequential: bool = Field(True, description="svd_llm: whiten each layer with the inputs of the already-factorized model")

    @model_validator(mode="after")
    def _one_budget(self) -> LowRankConfig:
        if (self.ratio is None) == (self.energy is None):
            raise ValueError("give exactly one of 'ratio' (share of linear parameters to remove) or 'energy' (per layer)")
        return self

    def needs_calibration(self) -> str | None:
        return "method 'svd_llm' whitens with calibration activations" if self.method == "svd_llm" else None


def _select(graph: Graph, config: LowRankConfig) -> tuple[list[LinearLayer], list[Skip], int]:
    """Selected layers that own their weights; skips for the others; parameters of all linear layers."""
    layers, candidates, skipped = selected_layers(graph, config.include, config.exclude, "factorized")
    selected = []
    for layer in candidates:
        if max_useful_rank(*layer.weight(graph).shape) < 1:
            shape = tuple(layer.weight(graph).shape)
            skipped.append(Skip(layer.node.name, f"{layer.name}: {shape} is too small for any rank to save parameters"))
        else:
            selected.append(layer)
    total = sum(layer.weight(graph).numel() for layer in layers)
    return selected, skipped, total


def _whitening(stats: InputStatistics | None, config: LowRankConfig) -> torch.Tensor | None:
    if config.method == "svd":
        return None
    if stats is None or stats.hessian is None:
        raise ValueError("svd_llm needs calibration statistics")
    return whitening_factor(stats.hessian, config.damping)


def _needs_spectra(config: LowRankConfig) -> bool:
    return config.energy is not None or config.allocation == "global"


def _ranks(graph: Graph, layers: list[LinearLayer], config: LowRankConfig, total: int,
           stats: dict[str, InputStatistics]) -> dict[str, int]:
    spectra = _needs_spectra(config)
    candidates = [
        Candidate(layer.name, *layer.weight(graph).shape,
                  singular_values(layer.weight(graph), _whitening(stats.get(layer.node.name), config)) if spectra else None)
        for layer in layers
    ]
    if config.energy is not None:
        return by_energy(candidates, config.energy)
    if config.allocation == "uniform":
        selected_params = sum(c.out_features * c.in_features for c in candidates)
        return uniform(candidates, min(config.ratio * total / selected_params, 1.0))
    return global_budget(candidates, int(round(config.ratio * total)))


def _replace(graph: Graph, layer: LinearLayer, a: torch.Tensor, b: torch.Tensor) -> None:
    """``linear(x, W, bias)`` -> ``linear(linear(x, B), A, bias)`` with new attributes for A and B."""
    node = layer.node
    set_attr(graph.module, f"{layer.name}.lowrank_in.weight", b)
    set_attr(graph.module, f"{layer.name}.lowrank_out.weight", a)
    with graph.graph.inserting_before(node):
        b_node = graph.graph.get_attr(f"{layer.name}.lowrank_in.weight")
        a_node = graph.graph.get_attr(f"{layer.name}.lowrank_out.weight")
        hidden = graph.graph.call_function(LINEAR, (node.args[0], b_node))
        args = (hidden, a_node) + ((layer.bias_node,) if layer.bias_node is not None else ())
        out = graph.graph.call_function(LINEAR, args)
    out.meta.update({k: v for k, v in node.meta.items() if k != "val"})
    node.replace_all_uses_with(out)
    graph.graph.erase_node(node)


def _factor_all(graph: Graph, layers: list[LinearLayer], ranks: dict[str, int], config: LowRankConfig,
                context: PassContext, stats: dict[str, InputStatistics]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The factors of every layer with a rank, whitened with sequential statistics when asked."""
    chosen = {layer.node.name: layer for layer in layers if ranks.get(layer.name, 0) >= 1}
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if config.method == "svd_llm" and config.sequential:
        def update(node: fx.Node, node_stats: InputStatistics) -> None:
            layer = chosen[node.name]
            weight = layer.weight(graph)
            a, b = factorize(weight, ranks[layer.name], _whitening(node_stats, config))
            factors[node.name] = (a, b)
            set_attr(graph.module, str(layer.weight_node.target), (a.to(torch.float64) @ b.to(torch.float64)).to(weight.dtype))

        originals = {name: layer.weight(graph) for name, layer in chosen.items()}
        calibrate_sequentially(graph, context.calibration, list(chosen), update)
        for name, layer in chosen.items():  # the dense products were only for the calibration run
            set_attr(graph.module, str(layer.weight_node.target), originals[name])
        return factors
    for name, layer in chosen.items():
        factors[name] = factorize(layer.weight(graph), ranks[layer.name], _whitening(stats.get(name), config))
    return factors


@register_pass("lowrank", config=LowRankConfig, lossy=True)
def lowrank(graph: Graph, config: LowRankConfig, context: PassContext) -> PassOutcome:
    """Factorize linear layers into two of lower rank (plain or SVD-LLM-whitened truncated SVD)."""
    if config.method == "svd_llm" and not context.calibration:
        raise ValueError("lowrank method 'svd_llm' needs calibration samples (the recipe's 'calibration' section)")
    layers, skipped, total = _select(graph, config)
    stats: dict[str, InputStatistics] = {}
    if config.method == "svd_llm" and layers and (_needs_spectra(config) or not config.sequential):
        stats = linear_input_statistics(graph, context.calibration, [layer.node.name for layer in layers])
    ranks = _ranks(graph, layers, config, total, stats) if layers else {}
    kept = []
    for layer in layers:
        rank, limit = ranks[layer.name], max_useful_rank(*layer.weight(graph).shape)
        if rank < 1 or rank > limit:
            why = "the parameter budget leaves it dense" if rank < 1 else (
                f"rank {rank} is needed to keep energy {config.energy}, but only ranks <= {limit} save parameters")
            skipped.append(Skip(layer.node.name, f"{layer.name}: {why}"))
            ranks[layer.name] = 0
        else:
            kept.append(layer)
    factors = _factor_all(graph, kept, ranks, config, context, stats)
    removed = 0
    for layer in kept:
        a, b = factors[layer.node.name]
        removed += layer.weight(graph).numel() - a.numel() - b.numel()
        _replace(graph, layer, a, b)
    drop_unused_weights(graph)
    result = {
        "layers_factorized": len(kept),
        "linear_parameters_before": total,
        "parameters_removed": removed,
        "share_of_linear_parameters_removed": round(removed / total, 6) if total else 0.0,
        "ranks": {layer.name: ranks[layer.name] for layer in kept},
    }
    return PassOutcome(graph, result, skipped)
