"""The NPU's integer requantize: int32 accumulators -> int8 with a fixed-point multiplier and shift.

A real rescale ``r = input_scale * weight_scale[n] / output_scale`` is represented as
``r ~= multiplier * 2**-shift`` with ``multiplier`` an int32 in ``[2**30, 2**31)`` (31 fractional
bits, as in gemmlowp/TFLite's ``QuantizeMultiplier``: Jacob et al., 2018, "Quantization and Training
of Neural Networks for Efficient Integer-Arithmetic-Only Inference", section 2.2). The product
``accumulator * multiplier`` is formed in int64, shifted right by ``shift`` with the descriptor's
rounding (``npu.rounding``), and saturated to int8 ``[-128, 127]`` (output zero point 0).

This module is the numpy reference of that arithmetic; ``integer_kernel`` is the same arithmetic as
a TVM kernel, and the two must agree bit for bit.
"""

from __future__ import annotations

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
MAX_SHIFT = 62  # int64 products: |acc| < 2**31 and multiplier < 2**31, so shifts up to 62 are exact


def quantize_multiplier(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(multiplier int32, shift int32)`` per element of the positive rescale ``real``.

    Precondition: every ``real`` is finite, >= 0 and < 2**30. A rescale so small that every int32
    accumulator maps to 0 gets multiplier 0 (shift 1).
    """
    real = np.asarray(real, dtype=np.float64)
    mantissa, exponent = np.frexp(real)                     # real = mantissa * 2**exponent, mantissa in [0.5, 1)
    multiplier = np.round(mantissa * 2.0 ** 31).astype(np.int64)
    carry = multiplier == 2 ** 31                           # mantissa rounded up to 1.0
    multiplier = np.where(carry, multiplier // 2, multiplier)
    exponent = np.where(carry, exponent + 1, exponent)
    shift = 31 - exponent.astype(np.int64)
    negligible = (real == 0) | (shift > MAX_SHIFT)
    multiplier = np.where(negligible, 0, multiplier)
    shift = np.where(negligible, 1, shift)
    return multiplier.astype(np.int32), shift.astype(np.int32)


def requantize(accumulator: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, rounding: str) -> np.ndarray:
    """int8 ``saturate(round(accumulator * multiplier / 2**shift))`` with ``rounding`` ``half_up`` (ties
    towards +inf: add ``2**(shift-1)``, arithmetic shift) or ``half_away_from_zero``.
    ``multiplier``/``shift`` broadcast along the last (output channel) axis."""
    product = accumulator.astype(np.int64) * multiplier.astype(np.int64)
    shift = shift.astype(np.int64)
    half = np.left_shift(np.int64(1), shift - 1)
    if rounding == "half_up":
        rounded = np.right_shift(product + half, shift)
    elif rounding == "half_away_from_zero":
        magnitude = np.right_shift(np.abs(product) + half, shift)
        rounded = np.where(product < 0, -magnitude, magnitude)
    else:
        raise ValueError(f"unknown rounding '{rounding}'")
    return np.clip(rounded, INT8_MIN, INT8_MAX).astype(np.int8)


def integer_linear(codes: np.ndarray, qweight: np.ndarray, bias: np.ndarray, multiplier: np.ndarray,
                   shift: np.ndarray, rounding: str) -> np.ndarray:
    """int8 ``[M, N]``: ``requantize(codes [M, K] int8 @ qweight[N, K].T int8 + bias int32)``, int32 sums."""
    accumulator = codes.astype(np.int32) @ qweight.astype(np.int32).T + bias.astype(np.int32)
    return requantize(accumulator, multiplier, shift, rounding)
