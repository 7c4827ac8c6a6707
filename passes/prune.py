"""``prune``: set a share of each linear layer's weights to zero (unstructured or N:M).

Methods: ``magnitude`` (smallest ``|W|`` of the layer), ``wanda`` (smallest ``|W| * ||X_j||`` of
each output row; Sun et al., 2023) and ``sparsegpt`` (OBS reconstruction with the calibration
Hessian; Frantar & Alistarh, 2023) — see ``passes/_pruning_masks.py`` and ``passes/_sparsegpt.py``.
``wanda`` and ``sparsegpt`` need the recipe's calibration data; with ``sequential: true`` (default)
each layer is pruned with the inputs it receives from the already-pruned layers before it
(``slmc.graph.activations.calibrate_sequentially``), as both papers do block by block.

``pattern``: ``unstructured`` (``sparsity``, per layer; ``overrides`` set it per layer-name glob,
later matches win) or ``2:4`` / ``4:8`` (keep N of every M consecutive input weights of a row,
50%). N:M is allowed only where the target descriptor's ``sparsity.patterns`` lists it.

Storage, honestly: slmc's TVM lowering has no sparse weight format or sparse kernels, so pruned
weights are stored and multiplied densely in the artifact; the report says so (``storage``) —
on every target today, sparsity buys quality-for-nothing, not size or speed.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import fx

from slmc.graph.activations import InputStatistics, calibrate_sequentially, linear_input_statistics
from slmc.graph.ir import Graph, set_attr
from slmc.graph.linears import LinearLayer, matches, selected_layers
from slmc.spec.pass_registry import PassConfig, PassContext, PassOutcome, Skip, register_pass
from slmc.passes._pruning_masks import magnitude_scores, n_m_mask, unstructured_mask, wanda_scores
from slmc.passes._sparsegpt import sparsegpt_prune
from slmc.spec.strict_model import StrictModel
from slmc.spec.target import TargetDescriptor

Pattern = Literal["unstructured", "2:4", "4:8"]


class SparsityOverride(StrictModel):
    """Layers whose name matches ``match`` (a glob) get this unstructured ``sparsity``."""

    match: str = Field(min_length=1)
    sparsity: float = Field(ge=0.0, lt=1.0)


class PruneConfig(PassConfig):
    method: Literal["magnitude", "wanda", "sparsegpt"] = Field("wanda", description="importance criterion")
    pattern: Pattern = Field("unstructured", description="unstructured, or N:M (needs the target to list it)")
    sparsity: float | None = Field(None, ge=0.0, lt=1.0, description="unstructured: share of zeros per layer (default 0.5)")
    overrides: list[SparsityOverride] = Field(default_factory=list, description="per-layer sparsity by name glob")
    include: list[str] = Field(default_factory=lambda: ["*"], min_length=1, description="glob patterns of layer names")
    exclude: list[str] = Field(default_factory=lambda: ["*lm_head"], description="glob patterns of layers to leave dense")
    sequential: bool = Field(True, description="wanda/sparsegpt: calibrate each layer on the already-pruned model")
    block_size: int = Field(128, ge=1, le=65536, description="sparsegpt: columns per block")
    damping: float = Field(0.01, gt=0.0, le=1.0, description="sparsegpt: added to diag(H), relative to its mean")

    @model_validator(mode="after")
    def _pattern_settings(self) -> PruneConfig:
        if self.pattern != "unstructured" and (self.sparsity is not None or self.overrides):
            raise ValueError(f"pattern {self.pattern} fixes the sparsity at 50%; remove 'sparsity' and 'overrides'")
        if self.pattern != "unstructured" and self.block_size % self.n_m[1] != 0:
            raise ValueError(f"block_size {self.block_size} must be a multiple of {self.n_m[1]} for pattern {self.pattern}")
        return self

    @property
    def n_m(self) -> tuple[int, int] | None:
        if self.pattern == "unstructured":
            return None
        n, m = self.pattern.split(":")
        return int(n), int(m)

    def sparsity_of(self, name: str) -> float:
        found = 0.5 if self.sparsity is None else self.sparsity
        for override in self.overrides:
            if matches(name, [override.match], []):
                found = override.sparsity
        return found

    def target_problems(self, target: TargetDescriptor) -> list[tuple[str, str]]:
        if self.pattern == "unstructured" or self.pattern in target.sparsity.patterns:
            return []
        listed = ", ".join(target.sparsity.patterns) or "none"
        return [("pattern", f"sparsity pattern '{self.pattern}' is not one the target's runtime exploits "
                            f"(its sparsity.patterns: {listed})")]

    def needs_calibration(self) -> str | None:
        return None if self.method == "magnitude" else f"method '{self.method}' weighs weights by calibration activations"


def _select(graph: Graph, config: PruneConfig) -> tuple[list[LinearLayer], list[Skip]]:
    _, candidates, skipped = selected_layers(graph, config.include, config.exclude, "pruned")
    selected = []
    for layer in candidates:
        in_features = layer.weight(graph).shape[1]
        if config.n_m is not None and in_features % config.n_m[1] != 0:
            skipped.append(Skip(layer.node.name,
                                f"{layer.name}: {in_features} input features are not a multiple of {config.n_m[1]}"))
        elif config.n_m is None and config.sparsity_of(layer.name) == 0.0:
            skipped.append(Skip(layer.node.name, f"{layer.name}: sparsity 0 by overrides"))
        else:
            selected.append(layer)
    return selected, skipped


def _pruned_weight(weight: torch.Tensor, stats: InputStatistics | None, config: PruneConfig, sparsity: float) -> torch.Tensor:
    if config.method == "sparsegpt":
        return sparsegpt_prune(weight, stats.hessian, sparsity, config.n_m, config.block_size, config.damping)
    scores = magnitude_scores(weight) if config.method == "magnitude" else wanda_scores(weight, stats.channel_norm)
    if config.n_m is not None:
        mask = n_m_mask(scores, *config.n_m)
    else:
        mask = unstructured_mask(scores, sparsity, per_row=config.method == "wanda")
    return weight.detach().masked_fill(mask, 0.0)


def storage_note(target: TargetDescriptor, pattern: str) -> str:
    """What the artifact does with the zeros, for the report (no target gets sparse storage today)."""
    listed = pattern in target.sparsity.patterns
    why = (f"target '{target.name}' lists '{pattern}', but slmc's TVM lowering has no sparse weight format or kernels"
           if listed else f"target '{target.name}' does not list '{pattern}' in sparsity.patterns")
    return f"dense: {why}; the zeros are stored and multiplied like any weight, so this sparsity buys no size or speed here"


@register_pass("prune", config=PruneConfig, lossy=True)
def prune(graph: Graph, config: PruneConfig, context: PassContext) -> PassOutcome:
    """Zero out weights of linear layers by magnitude, Wanda or SparseGPT (unstructured or N:M)."""
    if config.method != "magnitude" and not context.calibration:
        raise ValueError(f"prune method '{config.method}' needs calibration samples (the recipe's 'calibration' section)")
    layers, skipped = _select(graph, config)
    by_node = {layer.node.name: layer for layer in layers}
    hessian = config.method == "sparsegpt"
    per_layer: dict[str, float] = {}

    def update(node: fx.Node, stats: InputStatistics | None) -> None:
        layer = by_node[node.name]
        weight = layer.weight(graph)
        pruned = _pruned_weight(weight, stats, config, config.sparsity_of(layer.name))
        set_attr(graph.module, str(layer.weight_node.target), pruned)
        per_layer[layer.name] = round(float((pruned == 0).sum()) / pruned.numel(), 4)

    if config.method == "magnitude" or not layers:
        for layer in layers:
            update(layer.node, None)
    elif config.sequential:
        calibrate_sequentially(graph, context.calibration, list(by_node), update, hessian=hessian)
    else:
        stats = linear_input_statistics(graph, context.calibration, list(by_node), hessian=hessian)
        for name in by_node:
            update(by_node[name].node, stats[name])
    graph.module.recompile()
    pruned_params = sum(layer.weight(graph).numel() for layer in layers)
    zeros = sum(int((layer.weight(graph) == 0).sum()) for layer in layers)
    stats_out = {
        "layers_pruned": len(layers),
        "parameters_in_pruned_layers": pruned_params,
        "zeros": zeros,
        "sparsity_of_pruned_layers": round(zeros / pruned_params, 6) if pruned_params else 0.0,
        "layer_sparsity": per_layer,
        "storage": storage_note(context.target, config.pattern),
    }
    return PassOutcome(graph, stats_out, skipped)
