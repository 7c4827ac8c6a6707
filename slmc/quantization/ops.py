"""The quantized operators of slmc graphs, as PyTorch custom ops (``torch.ops.slmc.*``).

Each op's eager implementation is the *reference* the compiled artifact is verified against
(dequantize, then compute in float32; for ``w8a8_linear`` integer products summed exactly); TVM
lowers the same op to one kernel with dequantization fused into the matmul
(``slmc.quantization.tvm_kernels``). Weight layouts are those of ``slmc.quantization.formats``.

- ``quantized_linear(x, qweight, scales, zeros?, bias?, input_scale?, bits, group_size, scale_code_bits?)``:
  ``(x * input_scale) @ dequantize(qweight)^T + bias``. ``input_scale`` ``[K]`` is AWQ's inverse
  channel scaling (Lin et al., 2023), ``None`` when unused. ``scale_code_bits``: ``None`` when ``scales``
  holds one element per group (float16 scales or uint8 scale codes), 6 for 6-bit scale codes packed four
  per three bytes (``formats.pack_scale_codes``).
- ``quantized_embedding(ids, qweight, scales, zeros?, bits, group_size, scale_code_bits?)``: rows of the
  dequantized table.
- ``w8a8_linear(x, qweight, weight_scales, bias?, input_scale?, activation_scale)``: static int8
  activations (``round(x * input_scale / activation_scale)`` clamped to ``[-127, 127]``) times
  symmetric int8 weights ``[N, K]`` (int8 storage, per-output-channel float32 scales), int32
  accumulation, rescaled by ``activation_scale * weight_scales``. ``input_scale`` carries
  SmoothQuant's migration ``1/s`` (Xiao et al., 2022).
- ``w4a8_linear(x, qweight, scales, bias?, group_size, activation_group_size?, scale_code_bits?, row_scales?)``:
  dynamic int8 activations times symmetric int4 weights (codes ``c`` in ``[1, 15]`` standing for ``c - 8``, packed
  two per byte in the nibble-paired layout of ``slmc.quantization.w4a8_layout``, float16 scales per group of
  ``group_size`` inputs, or uint8 scale codes, ``scale_code_bits`` as for ``quantized_linear``, with their float16
  ``row_scales [N]``, which multiply the output before the bias: in the kernel's epilogue, not one more kernel).
  Each row (token) of ``x`` is quantized per *activation group* of ``activation_group_size``
  inputs (``None``: the whole row, one scale per token), each group with its own scale ``max|x_group| / 127``;
  each weight group's integer dot product is summed in int32, times the group's weight scale and the scale of
  the activation group holding it, accumulated in float32 over the groups (the TVM kernel); the eager reference
  computes the same sum as a float32 matmul of the (per-group rescaled) codes with the dequantized weight
  (equal up to float32 rounding). An activation group is a whole number of weight groups and divides the row
  (``activation_group_problem``). ExecuTorch's 8da4w (per token), llama.cpp's Q4_0 x Q8_0 (per block of 32:
  ``activation_group_size`` 32 with ``group_size`` 32) and llm-compressor's W4AINT8 are this arithmetic.
- ``w4a8_embedding(ids, qweight, scales, group_size, scale_code_bits?)``: rows of the dequantized table stored as
  ``w4a8_linear``'s weight (the same arguments): the embedding of a tied output head gathers the head's own codes
  and scales, so the table is stored once (``passes/quantize.py``). Its own op rather than a layout argument of
  ``quantized_embedding``: the paired layout has no zero points and no bit width to choose, so the gather takes
  exactly the head's weight arguments, and a change to them (scale codes) changes both ops alike.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch
from torch.library import Library

from slmc.quantization.formats import dequantize
from slmc.quantization.w4a8_layout import dequantize_paired

_LIBRARY = Library("slmc", "DEF")
_LIBRARY.define("quantized_linear(Tensor x, Tensor qweight, Tensor scales, Tensor? zeros, Tensor? bias, "
                "Tensor? input_scale, int bits, int group_size, int? scale_code_bits=None) -> Tensor")
_LIBRARY.define("quantized_embedding(Tensor ids, Tensor qweight, Tensor scales, Tensor? zeros, int bits, "
                "int group_size, int? scale_code_bits=None) -> Tensor")
_LIBRARY.define("w8a8_linear(Tensor x, Tensor qweight, Tensor weight_scales, Tensor? bias, Tensor? input_scale, "
                "float activation_scale) -> Tensor")
_LIBRARY.define("w4a8_linear(Tensor x, Tensor qweight, Tensor scales, Tensor? bias, int group_size, "
                "int? activation_group_size=None, int? scale_code_bits=None, Tensor? row_scales=None) -> Tensor")

ACTIVATION_LIMIT = 127
TOKEN_RANGE_FLOOR = 1e-30  # max|x_row| below it is raised to it: an all-zero row gets codes 0, not 0 * inf
INT4_MID = 8  # the implicit zero point of symmetric int4 codes (slmc.quantization.formats)


_DEQUANTIZED: dict[int, tuple[Any, tuple[int, ...], torch.Tensor]] = {}


def _dequantized(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, bits: int,
                 group_size: int, paired: bool = False, scale_code_bits: int | None = None) -> torch.Tensor:
    """``dequantize(...)`` (``paired``: ``w4a8_linear``'s layout, ``dequantize_paired``), remembered per stored
    ``qweight`` while it lives and is unchanged.

    Eager evaluation calls a quantized op thousands of times with the same stored tensors; the
    cache entry is keyed by the tensors' identities and in-place versions and dropped with them.
    """
    key = id(qweight)
    stamp = (id(scales), id(zeros), qweight._version, scales._version, zeros._version if zeros is not None else -1,
             bits, group_size, paired, scale_code_bits)
    entry = _DEQUANTIZED.get(key)
    if entry is not None and entry[0]() is qweight and entry[1] == stamp:
        return entry[2]
    weight = (dequantize_paired(qweight, scales, group_size, scale_code_bits) if paired
              else dequantize(qweight, scales, zeros, bits, group_size, scale_code_bits))
    if not torch._C._functorch.is_functorch_wrapped_tensor(qweight) and type(qweight) in (torch.Tensor, torch.nn.Parameter):
        _DEQUANTIZED[key] = (weakref.ref(qweight, lambda _, k=key: _DEQUANTIZED.pop(k, None)), stamp, weight)
    return weight


def forget_dequantized() -> None:
    """Drop every remembered dequantized weight (``_dequantized``; each is its layer's float32 size, all of
    them the float model's): for a caller done with eager evaluation while the quantized graph lives on
    (the compile's verification, before it loads the artifact; issue 22's compile peak). The next eager
    call dequantizes again."""
    _DEQUANTIZED.clear()


def _quantized_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                      bias: torch.Tensor | None, input_scale: torch.Tensor | None, bits: int, group_size: int,
                      scale_code_bits: int | None = None) -> torch.Tensor:
    weight = _dequantized(qweight, scales, zeros, bits, group_size, scale_code_bits=scale_code_bits)
    if input_scale is not None:
        x = x * input_scale
    return torch.nn.functional.linear(x, weight, bias)


def _quantized_embedding(ids: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None,
                         bits: int, group_size: int, scale_code_bits: int | None = None) -> torch.Tensor:
    return torch.nn.functional.embedding(ids, _dequantized(qweight, scales, zeros, bits, group_size,
                                                           scale_code_bits=scale_code_bits))


def reciprocal(activation_scale: float) -> float:
    """``1 / activation_scale`` rounded to float32: both the eager op and the TVM kernel multiply by
    exactly this value, so their activation codes agree bit for bit."""
    return float(np.float32(1.0 / activation_scale))


def quantize_activations(x: torch.Tensor, input_scale: torch.Tensor | None, activation_scale: float) -> torch.Tensor:
    """Integer codes (as float32) of ``x`` for ``w8a8_linear``: ``x * input_scale * (1/scale)``,
    rounded half to even, saturated at ±127."""
    if input_scale is not None:
        x = x * input_scale
    return torch.clamp(torch.round(x * reciprocal(activation_scale)), -ACTIVATION_LIMIT, ACTIVATION_LIMIT)


def _w8a8_linear(x: torch.Tensor, qweight: torch.Tensor, weight_scales: torch.Tensor, bias: torch.Tensor | None,
                 input_scale: torch.Tensor | None, activation_scale: float) -> torch.Tensor:
    codes = quantize_activations(x, input_scale, activation_scale)
    accumulated = (codes.to(torch.float64) @ qweight.to(torch.float64).T).to(torch.float32)  # exact int32 sums
    out = accumulated * (activation_scale * weight_scales)
    return out + bias if bias is not None else out


def activation_group_problem(in_features: int, group_size: int, activation_group_size: int | None) -> str | None:
    """Why ``w4a8_linear`` cannot scale activations in groups of ``activation_group_size`` (``None``: per token)
    for a weight of ``in_features`` inputs in groups of ``group_size``, or ``None``. Each weight group's int32
    dot product must lie in one activation group: the activation group is a whole number of weight groups,
    and it divides the row."""
    if activation_group_size is None:
        return None
    if activation_group_size < 1 or in_features % activation_group_size:
        return (f"activation_group_size {activation_group_size} does not divide in_features {in_features} (each row is "
                "scaled in whole groups)")
    if activation_group_size % group_size:
        return (f"activation_group_size {activation_group_size} is not a multiple of the weight group size {group_size} "
                "(each weight group's int32 dot product must lie in one activation group)")
    return None


def quantize_activation_groups(x: torch.Tensor, group: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic symmetric int8 codes (as float32) of ``x [..., K]`` per group of ``group`` inputs of a row (``None``:
    the whole row) and the groups' scales ``[..., K / group]`` (``[..., 1]`` per token).

    ``r = max(max|x_group|, TOKEN_RANGE_FLOOR)``; codes ``round(x * (127 / r))`` (half to even, saturated
    at ±127); scale ``r / 127``. Both divisions are single float32 operations, as in the TVM kernel
    (``slmc.quantization.w4a8_kernel``), so eager and compiled codes agree bit for bit on equal inputs.
    Precondition: ``group`` divides ``K``.
    """
    x = x.to(torch.float32)
    width = x.shape[-1] if group is None else group
    grouped = x.reshape(*x.shape[:-1], x.shape[-1] // width, width)
    peak = grouped.abs().amax(dim=-1, keepdim=True).clamp_min(TOKEN_RANGE_FLOOR)
    codes = torch.clamp(torch.round(grouped * (ACTIVATION_LIMIT / peak)), -ACTIVATION_LIMIT, ACTIVATION_LIMIT)
    return codes.reshape(x.shape), (peak / ACTIVATION_LIMIT).squeeze(-1)


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``quantize_activation_groups`` with one group per row: codes ``[..., K]`` and scales ``[..., 1]``."""
    return quantize_activation_groups(x, None)


def _w4a8_linear(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None,
                 group_size: int, activation_group_size: int | None = None,
                 scale_code_bits: int | None = None, row_scales: torch.Tensor | None = None) -> torch.Tensor:
    problem = activation_group_problem(x.shape[-1], group_size, activation_group_size)
    if problem is not None:
        raise ValueError(f"slmc.w4a8_linear: {problem}")
    weight = _dequantized(qweight, scales, None, 4, group_size, paired=True, scale_code_bits=scale_code_bits)
    codes, act_scale = quantize_activation_groups(x, activation_group_size)
    # sum_k code(x)[k] * (c[k] - 8) * scale[g(k)] * act_scale[a(k)]: the kernel's int32 group sums times their scales,
    # in float32 (the same value up to float32 rounding; a matmul on the remembered dequantized weight keeps eager fast)
    if act_scale.shape[-1] == 1:  # per token: the row's scale after the matmul
        out = torch.nn.functional.linear(codes, weight) * act_scale
    else:  # per group: the codes rescaled group by group, then one matmul
        grouped = codes.reshape(*codes.shape[:-1], act_scale.shape[-1], -1) * act_scale.unsqueeze(-1)
        out = torch.nn.functional.linear(grouped.reshape(codes.shape), weight)
    if row_scales is not None:  # scale codes: the float16 scale per output row, before the bias
        out = out * row_scales.to(torch.float32)
    return out + bias if bias is not None else out


_LIBRARY.define("w4a8_embedding(Tensor ids, Tensor qweight, Tensor scales, int group_size, "
                "int? scale_code_bits=None) -> Tensor")


def _w4a8_embedding(ids: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor, group_size: int,
                    scale_code_bits: int | None = None) -> torch.Tensor:
    """Rows ``ids`` of ``dequantize_paired(qweight, scales)``: the remembered weight of the tied ``w4a8_linear``
    reading the same tensors (``_dequantized``'s key and stamp are the same), so eager dequantizes the table once."""
    return torch.nn.functional.embedding(ids, _dequantized(qweight, scales, None, 4, group_size, paired=True,
                                                           scale_code_bits=scale_code_bits))


_LIBRARY.impl("quantized_linear", _quantized_linear, "CompositeExplicitAutograd")
_LIBRARY.impl("quantized_embedding", _quantized_embedding, "CompositeExplicitAutograd")
_LIBRARY.impl("w8a8_linear", _w8a8_linear, "CompositeExplicitAutograd")
_LIBRARY.impl("w4a8_linear", _w4a8_linear, "CompositeExplicitAutograd")
_LIBRARY.impl("w4a8_embedding", _w4a8_embedding, "CompositeExplicitAutograd")


@torch.library.register_fake("slmc::quantized_linear")
def _quantized_linear_fake(x, qweight, scales, zeros, bias, input_scale, bits, group_size, scale_code_bits=None):  # noqa: ANN001, ANN202
    return x.new_empty((*x.shape[:-1], qweight.shape[0]))


@torch.library.register_fake("slmc::quantized_embedding")
def _quantized_embedding_fake(ids, qweight, scales, zeros, bits, group_size, scale_code_bits=None):  # noqa: ANN001, ANN202
    return scales.new_empty((*ids.shape, qweight.shape[1] * 8 // bits), dtype=torch.float32)


@torch.library.register_fake("slmc::w8a8_linear")
def _w8a8_linear_fake(x, qweight, weight_scales, bias, input_scale, activation_scale):  # noqa: ANN001, ANN202
    return x.new_empty((*x.shape[:-1], qweight.shape[0]))


@torch.library.register_fake("slmc::w4a8_linear")
def _w4a8_linear_fake(x, qweight, scales, bias, group_size, activation_group_size=None, scale_code_bits=None,  # noqa: ANN001, ANN202
                      row_scales=None):
    return x.new_empty((*x.shape[:-1], qweight.shape[0]))


@torch.library.register_fake("slmc::w4a8_embedding")
def _w4a8_embedding_fake(ids, qweight, scales, group_size, scale_code_bits=None):  # noqa: ANN001, ANN202
    return scales.new_empty((*ids.shape, qweight.shape[1] * 2), dtype=torch.float32)


QUANTIZED_LINEAR = torch.ops.slmc.quantized_linear.default
QUANTIZED_EMBEDDING = torch.ops.slmc.quantized_embedding.default
W8A8_LINEAR = torch.ops.slmc.w8a8_linear.default
W4A8_LINEAR = torch.ops.slmc.w4a8_linear.default
W4A8_EMBEDDING = torch.ops.slmc.w4a8_embedding.default
INT8_ACTIVATION_OPS = frozenset({"w8a8_linear", "w4a8_linear"})  # ops whose activation codes can flip at rounding ties
