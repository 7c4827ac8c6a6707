"""AWQ: activation-aware weight quantization by per-channel scaling.

Lin, Tang, Tang, Yang, Chen, Wang, Xiao, Dang, Gan, Han: "AWQ: Activation-aware Weight
Quantization for LLM Compression and Acceleration" (MLSys 2024, arXiv:2306.00978), Section 3.
Input channels that see large activations matter most; scaling them up by ``s`` before rounding
(``Q(W diag(s)) diag(s)^-1``) shrinks their relative rounding error. ``s = mean|x|^alpha``
(normalised), with ``alpha`` chosen on a grid in ``[0, 1)`` to minimise the layer's output error on
calibration data. Optionally the clipping range of each group is searched too (the paper's
"auto-clip"), shrinking the max by factors down to ``1 - max_shrink``.

The output error of a candidate ``W_hat`` is ``tr((W_hat - W) H (W_hat - W)^T)`` with
``H = sum x^T x``, so only the calibration statistics are needed, never the raw activations.
slmc keeps ``diag(s)^-1`` as the ``input_scale`` of the quantized linear op instead of folding it
into the previous layer, so every linear may take its own scales.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slmc.quantization.formats import (QuantFormat, QuantizedWeight, clip_factors, quantize_group, quantize_rtn, range_parameters,
                                      row_scales, stored_scales)


@dataclass(frozen=True)
class AwqSettings:
    grid: int = 20
    clip_search: bool = True
    max_shrink: float = 0.5
    clip_grid: int = 20


def output_error(delta: torch.Tensor, hessian: torch.Tensor) -> float:
    """``tr(delta H delta^T)``: the summed squared output error of a weight error ``delta``."""
    return float(((delta.to(torch.float64) @ hessian) * delta.to(torch.float64)).sum())


def _clipped(w: torch.Tensor, fmt: QuantFormat, hessian: torch.Tensor, settings: AwqSettings) -> QuantizedWeight:
    """RTN with the per-group range shrunk (``formats.range_parameters`` on the factors of
    ``formats.clip_factors``) where that lowers each group's output error."""
    n, k = w.shape
    g = fmt.group(k)
    if not settings.clip_search:
        return quantize_rtn(w, fmt)
    groups = w.reshape(n, k // g, g)
    rows = row_scales(w, fmt) if fmt.scale_codes else None
    flat_rows = None if rows is None else rows.repeat_interleave(k // g)
    best_err = torch.full((n, k // g), float("inf"), dtype=torch.float64)
    best_scale = torch.zeros(n, k // g)
    best_zero = None if fmt.symmetric else torch.zeros(n, k // g)
    h_blocks = [hessian[j * g:(j + 1) * g, j * g:(j + 1) * g] for j in range(k // g)]
    for shrink in clip_factors(settings.clip_grid, settings.max_shrink):
        flat_scale, flat_zero = range_parameters(groups.reshape(n * (k // g), g), fmt, shrink, flat_rows)
        scale = flat_scale.to(torch.float32).reshape(n, k // g)
        zero = None if flat_zero is None else flat_zero.reshape(n, k // g)
        for j in range(k // g):
            z = None if zero is None else zero[:, j]
            codes = quantize_group(groups[:, j], scale[:, j], z, fmt)
            z_value = z.unsqueeze(1) if z is not None else float(fmt.mid)
            delta = (codes - z_value) * scale[:, j].unsqueeze(1) - groups[:, j]
            err = ((delta.to(torch.float64) @ h_blocks[j]) * delta.to(torch.float64)).sum(1)
            better = err < best_err[:, j]
            best_err[better, j] = err[better]
            best_scale[better, j] = scale[better, j]
            if best_zero is not None and z is not None:
                best_zero[better, j] = z[better]
    codes = torch.empty(n, k)
    for j in range(k // g):
        codes[:, j * g:(j + 1) * g] = quantize_group(groups[:, j], best_scale[:, j], None if best_zero is None else best_zero[:, j], fmt)
    return QuantizedWeight(codes.to(torch.uint8), stored_scales(best_scale, fmt, rows),
                           None if best_zero is None else best_zero.to(torch.uint8), fmt, rows)


def awq_quantize(weight: torch.Tensor, abs_mean: torch.Tensor, hessian: torch.Tensor, fmt: QuantFormat,
                 settings: AwqSettings = AwqSettings()) -> tuple[QuantizedWeight, torch.Tensor, float, float]:
    """Quantize ``weight [N, K]`` given the calibration inputs' per-channel ``mean|x|`` and ``H``.

    Returns the quantized (scaled) weight, the ``input_scale`` ``1/s`` ``[K]`` (float32), the chosen
    ``alpha`` and the output error. ``alpha = 0`` (``s = 1``) is on the grid, so AWQ never does
    worse than round-to-nearest on the calibration data.
    """
    w = weight.detach().to(torch.float32)
    h = hessian.to(torch.float64)
    x_mean = abs_mean.to(torch.float32).clamp_min(1e-8)
    best: tuple[float, float, torch.Tensor] | None = None
    for step in range(settings.grid):
        alpha = step / settings.grid
        s = x_mean.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()
        candidate = quantize_rtn(w * s, fmt).dequantize() / s
        err = output_error(candidate - w, h)
        if best is None or err < best[0]:
            best = (err, alpha, s)
    _, alpha, s = best
    scaled_h = h * (1.0 / s.to(torch.float64)).unsqueeze(0) * (1.0 / s.to(torch.float64)).unsqueeze(1)
    quantized = _clipped(w * s, fmt, scaled_h, settings)
    err = output_error(quantized.dequantize() / s - w, h)
    return quantized, (1.0 / s).contiguous(), alpha, err
