"""GPTQ: layer-wise quantization with second-order error compensation.

Frantar, Ashkboos, Hoefler, Alistarh: "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers" (ICLR 2023, arXiv:2210.17323), Algorithm 1. Columns of ``W [N, K]`` are
quantized one at a time; the rounding error of column ``i`` is spread over the columns not yet
quantized through the inverse Hessian ``H^-1`` of the layer's reconstruction loss
``||W X - Q X||^2`` (``H = 2 X^T X``), processed in blocks of ``block_size`` columns with lazy
batch updates, using the upper Cholesky factor of ``H^-1`` for numerical stability.

Group parameters are chosen when the first column of a group is reached, from the columns of that
group as already updated ("dynamic" groups, as in the reference implementation); with
``act_order`` (columns in order of decreasing ``diag(H)``) they are chosen up front from the
original weights ("static" groups), so every group keeps one scale whatever the column order.
With scale codes (``QuantFormat.scale_codes``) the row scales are fixed up front from the original
weights, and each group's scale code is chosen (clip-searched) when its scale is.

Precondition: ``hessian`` is ``sum x^T x`` over calibration rows (``[K, K]``, any positive scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slmc.quantization.formats import QuantFormat, QuantizedWeight, assemble, group_parameters, quantize_group, row_scales


@dataclass(frozen=True)
class GptqSettings:
    damp: float = 0.01          # fraction of mean(diag H) added to the diagonal
    block_size: int = 128
    act_order: bool = False


def _inverse_hessian_factor(hessian: torch.Tensor, w: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of ``(H + damp * mean(diag H) * I)^-1``; dead channels zeroed in ``w``."""
    h = hessian.to(torch.float64).clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    diag = torch.arange(h.shape[0])
    h[diag, diag] += damp * torch.mean(torch.diagonal(h))
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inverse, upper=True).to(torch.float32)


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, fmt: QuantFormat,
                  settings: GptqSettings = GptqSettings()) -> tuple[QuantizedWeight, float]:
    """Quantize ``weight [N, K]``; returns the quantized weight and the proxy loss
    ``sum_i ||err_i||^2 / [H^-1]_ii / 2`` (the GPTQ objective's increase, for the report)."""
    w = weight.detach().to(torch.float32).clone()
    n, k = w.shape
    g = fmt.group(k)
    static: tuple[torch.Tensor, torch.Tensor | None] | None = None
    perm = None
    rows = row_scales(w, fmt) if fmt.scale_codes else None
    if settings.act_order:
        perm = torch.argsort(torch.diagonal(hessian), descending=True)
        if fmt.group_size is not None:
            scale, zero = group_parameters(w.reshape(n * (k // g), g), fmt,
                                           None if rows is None else rows.repeat_interleave(k // g))
            static = (scale.reshape(n, k // g), None if zero is None else zero.reshape(n, k // g))
        w = w[:, perm]
        hessian = hessian[perm][:, perm]
    hinv = _inverse_hessian_factor(hessian, w, settings.damp)
    codes = torch.zeros(n, k)
    scales: list[torch.Tensor | None] = [None] * (k // g)
    zeros: list[torch.Tensor | None] = [None] * (k // g)
    loss = 0.0
    for start in range(0, k, settings.block_size):
        stop = min(start + settings.block_size, k)
        block = w[:, start:stop].clone()
        errors = torch.zeros_like(block)
        hinv_block = hinv[start:stop, start:stop]
        for i in range(stop - start):
            column = start + i
            original = int(perm[column]) if perm is not None else column
            group = original // g
            if static is not None:
                scale, zero = static[0][:, group], (static[1][:, group] if static[1] is not None else None)
            else:
                if column % g == 0:
                    span = block[:, i:i + g] if i + g <= stop - start else torch.cat((block[:, i:], w[:, stop:column + g]), dim=1)
                    scales[group], zeros[group] = group_parameters(span, fmt, rows)
                scale, zero = scales[group], zeros[group]
            if static is not None:
                scales[group], zeros[group] = scale, zero
            current = block[:, i]
            code = quantize_group(current, scale, zero, fmt)
            codes[:, column] = code
            zero_value = zero if zero is not None else torch.full_like(code, float(fmt.mid))
            quantized = (code - zero_value) * scale.to(torch.float32)
            d = hinv_block[i, i]
            err = (current - quantized) / d
            loss += float((current - quantized).square().sum() / d**2) / 2
            block[:, i:] -= err.unsqueeze(1) * hinv_block[i, i:].unsqueeze(0)
            errors[:, i] = err
        w[:, stop:] -= errors @ hinv[start:stop, stop:]
    if perm is not None:
        restored = torch.empty_like(codes)
        restored[:, perm] = codes
        codes = restored
    return assemble(codes, scales, zeros, fmt, rows), loss
