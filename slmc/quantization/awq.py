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

from slmc.quantization.formats import QuantFormat, QuantizedWeight, SCALE_DTYPE, quantize_group, quantize_rtn


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
    """RTN with the per-group range shrunk where that lowers each group's output error."""
    n, k = w.shape
    g = fmt.group(k)
    best = quantize_rtn(w, fmt)
    if not settings.clip_search:
        return best
    groups = w.reshape(n, k // g, g)
    best_err = torch.full((n, k // g), float("inf"), dtype=torch.float64)
    best_scale = best.scales.clone()
    best_zero = None if best.zeros is None else best.zeros.clone()
    h_blocks = [hessian[j * g:(j + 1) * g, j * g:(j + 1) * g] for j in range(k // g)]
    for step in range(settings.clip_grid):
        shrink = 1.0 - settings.max_shrink * step / settings.clip_grid
        low = (groups.amin(dim=2) * shrink).clamp_max(0.0)
        high = (groups.amax(dim=2) * shrink).clamp_min(0.0)
        if fmt.symmetric:
            scale = (torch.maximum(high, -low) / (fmt.mid - 1)).clamp_min(torch.finfo(SCALE_DTYPE).tiny).to(SCALE_DTYPE)
            zero = None
        else:
            scale = ((high - low) / (fmt.levels - 1)).clamp_min(torch.finfo(SCALE_DTYPE).tiny).to(SCALE_DTYPE)
            zero = torch.round(-low / scale.to(torch.float32)).clamp(0, fmt.levels - 1)
        for j in range(k // g):
            z = None if zero is None else zero[:, j]
            codes = quantize_group(groups[:, j], scale[:, j], z, fmt)
            z_value = z.unsqueeze(1) if z is not None else float(fmt.mid)
            delta = (codes - z_value) * scale[:, j].to(torch.float32).unsqueeze(1) - groups[:, j]
            err = ((delta.to(torch.float64) @ h_blocks[j]) * delta.to(torch.float64)).sum(1)
            better = err < best_err[:, j]
            best_err[better, j] = err[better]
            best_scale[better, j] = scale[better, j]
            if best_zero is not None and z is not None:
                best_zero[better, j] = z[better].to(torch.uint8)
    codes = torch.empty(n, k)
    for j in range(k // g):
        z = None if best_zero is None else best_zero[:, j].to(torch.float32)
        codes[:, j * g:(j + 1) * g] = quantize_group(groups[:, j], best_scale[:, j], z, fmt)
    return QuantizedWeight(codes.to(torch.uint8), best_scale, best_zero, fmt)


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
