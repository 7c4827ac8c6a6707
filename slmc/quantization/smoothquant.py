"""SmoothQuant migration and activation observers for static int8 activations (``w8a8``).

Xiao, Lin, Seznec, Wu, Demouth, Han: "SmoothQuant: Accurate and Efficient Post-Training
Quantization for Large Language Models" (ICML 2023, arXiv:2211.10438), Section 4: activation
outliers live in a few input channels; dividing channel ``j`` of the activations by
``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` and multiplying the weights' column ``j`` by ``s_j``
moves quantization difficulty from activations to weights without changing the product.

Observers choose the per-tensor activation scale ``a / 127`` from calibration data: ``minmax``
takes ``a = max|x|``; ``percentile`` takes the given percentile of ``|x|`` over a bounded sample
of calibration rows, clipping rare outliers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import fx

from slmc.graph.ir import Graph

MAX_ROWS_PER_NODE = 4096


def smoothing_factors(x_abs_max: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """``s [K]`` for activations with per-channel ``max|x|`` and ``weight [N, K]`` (float32)."""
    w_max = weight.detach().abs().amax(dim=0).to(torch.float32).clamp_min(1e-5)
    x_max = x_abs_max.to(torch.float32).clamp_min(1e-5)
    return (x_max.pow(alpha) / w_max.pow(1.0 - alpha)).clamp_min(1e-5)


def activation_scale(rows: torch.Tensor | None, abs_max: torch.Tensor, input_scale: torch.Tensor | None,
                     observer: str, percentile: float) -> float:
    """The activation scale (``a / 127``) of inputs scaled by ``input_scale``.

    ``minmax`` uses the exact per-channel maxima ``abs_max``; ``percentile`` the sampled ``rows``.
    """
    factor = input_scale if input_scale is not None else torch.ones_like(abs_max, dtype=torch.float32)
    if observer == "minmax":
        bound = float((abs_max.to(torch.float32) * factor).max())
    else:
        values = (rows.to(torch.float32) * factor).abs().flatten()
        bound = float(torch.quantile(values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(0))[:16_000_000]],
                                     percentile / 100.0))
    return max(bound, 1e-8) / 127.0


class _RowSampler(fx.Interpreter):
    """Runs the graph and keeps up to ``MAX_ROWS_PER_NODE`` input rows of each watched node."""

    def __init__(self, module: fx.GraphModule, watched: set[str], rows: dict[str, list[torch.Tensor]]):
        super().__init__(module)
        self.watched = watched
        self.rows = rows

    def run_node(self, n: fx.Node) -> object:
        if n.name in self.watched:
            x = self.env[n.args[0]]
            kept = sum(r.shape[0] for r in self.rows[n.name])
            if kept < MAX_ROWS_PER_NODE:
                self.rows[n.name].append(x.detach().reshape(-1, x.shape[-1])[: MAX_ROWS_PER_NODE - kept].clone())
        return super().run_node(n)


def sample_input_rows(graph: Graph, samples: Sequence[tuple[torch.Tensor, ...]], nodes: Sequence[str]) -> dict[str, torch.Tensor]:
    """Up to ``MAX_ROWS_PER_NODE`` rows of the first input of each named node, in sample order."""
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in nodes}
    sampler = _RowSampler(graph.module, set(nodes), rows)
    with torch.no_grad():
        for sample in samples:
            sampler.run(*sample)
    return {name: torch.cat(kept) for name, kept in rows.items() if kept}
