"""TVM kernel of ``w4a8_linear``: dynamic int8 activations (per token or per activation group) x packed int4
weights, int32 group sums.

The tensor-expression stages (``slmc.kernel = "w4a8_linear"``; the converter is
``slmc.quantization.tvm_kernels``' ``_convert_w4a8_linear``). An activation group ``a`` is ``A`` consecutive
inputs of a row (``activation_group_size``; per token ``A = K``, one group), a whole number of weight groups:

- ``token_absmax_lanes`` / ``token_absmax`` / ``token_inverse``: ``r = max(max|x[m, group a]|, TOKEN_RANGE_FLOOR)``
  (in 16 lanes, then across them) and ``127 / r`` per row and activation group;
- ``quantize_activations``: int8 codes ``round(x * (127 / r))`` (half to even, saturated at ±127), rows
  padded to a multiple of ``row_multiple`` with copies of the last row (computed, never written out);
- ``unpacked_codes``: the unsigned int4 codes ``c`` (in ``[1, 15]``) as int8, tile by tile
  (``[N/16, K/4, 16, 4]``: one int8 dot-product tile of ``slmc.schedules.int8_dot_intrinsics``), read
  from paired bytes ``[N/16, K/8, 16, 4]`` (``slmc.quantization.w4a8_layout``: tile ``2b`` in the low
  nibbles of block ``b``, tile ``2b + 1`` in its high nibbles; the converter's reshape/permute of
  ``qweight [N, K/2]``, which ``slmc.schedules.prepack`` applies to the stored weight at compile time:
  4 bits per weight in memory);
- ``code_offset``: ``-8 * sum_{k in group g} x[m, k]`` per row and group (int32);
- ``int8_group_dot``: ``sum_{k in group g} x[m, k] * c[n, k]`` in int32, per group: the reduction multiplies
  by the unsigned codes only, which are ``vpdpbusd``'s unsigned operand as they are (the activation
  codes its signed one; ``sdot`` takes both as signed bytes, and codes below 16 are the same bytes);
  ``code_offset`` turns it into ``sum x * (c - 8)`` with one int32 add per row, group and 16 channels in
  the rescale (Intel, "Lower Numerical Precision Deep Learning Inference and Training", 2018: the
  u8 x s8 compensation term; TE takes only a constant as a reduction's initial value);
- ``token_scale``: ``r / 127`` per row and activation group;
- ``group_rescale``: ``sum_g float(dot[m, g, n] + code_offset[m, g]) * scale[g, n] * token_scale[m, a(g)]`` in float32,
  the groups in order (``a(g)`` the activation group holding weight group ``g``: with ``A`` equal to the weight group
  size each group's int32 dot has its own activation scale, as llama.cpp's Q4_0 x Q8_0 blocks; the same number of
  multiplies per group as per token). The activation scale is inside the sum, so that the epilogue reads this
  stage only: a schedule
  computes it per pair of rows, and TVM's ``reverse_compute_at`` refuses an epilogue with another
  producer outside the loop);
- ``requantize``: (x float16 row scale of scale codes) (+ bias).

The activation codes are the eager reference's bit for bit (``slmc.quantization.ops.w4a8_linear``);
its sum is a float32 matmul with the dequantized weight, equal to this one up to float32 rounding. ``slmc.schedules.int4_int8_matmul`` schedules it onto the
target's int8 dot-product instructions. Without tiles (16 does not divide ``N`` or 8 does not divide
the group size) the weight stays ``[N, K/2]`` and the codes are unpacked inside the reduction.
"""

from __future__ import annotations

from typing import Any

from tvm import te, tirx

from slmc.quantization.ops import ACTIVATION_LIMIT, INT4_MID, TOKEN_RANGE_FLOOR
from slmc.quantization.scale_code_te import group_scale
from slmc.quantization.w4a8_layout import PAIR_BLOCK


def nibble(byte: Any, high: Any) -> Any:
    """The unsigned code (uint8, below 16) in ``byte``'s low (``high`` 0) or high (``high`` 1) nibble: on whole
    64-byte blocks one shift and one mask (``vpsrlw`` + ``vpand``; Arm ``ushr`` + ``and``)."""
    shift = (high * 4).astype("uint8")
    return tirx.bitwise_and(tirx.shift_right(byte, shift), tirx.const(15, "uint8"))


def paired_code(qweight: te.Tensor, n: Any, k: Any) -> Any:
    """The unsigned code (as int32) of input ``k`` of row ``n``, in the untiled ``[N, K/2]`` paired layout or the
    converter's tiled ``[N/16, K/8, 16, 4]`` one (input ``k`` of channel ``n`` in byte ``[n/16, k/8, n%16, k%4]``, the
    high nibble when ``k % 8 >= 4``; ``slmc.quantization.tvm_kernels._w4a8_code_layout``)."""
    half = PAIR_BLOCK // 2
    if len(qweight.shape) == 2:
        byte = qweight[n, tirx.floordiv(k, PAIR_BLOCK) * half + tirx.floormod(k, half)]
    else:
        width = qweight.shape[2]
        byte = qweight[tirx.floordiv(n, width), tirx.floordiv(k, PAIR_BLOCK), tirx.floormod(n, width), tirx.floormod(k, half)]
    return nibble(byte, tirx.floormod(tirx.floordiv(k, half), 2)).astype("int32")


# The row's range in independent lanes (``token_absmax_lanes``: lane ``l`` the max over inputs ``l, l + 16, ...``),
# then the max of the lanes: one vector max per 16 inputs, where a single running max is a chain of scalar maxes
# (4 cycles each, 0.1 ms per 128 x 576 linear). The max of maxes is exact in any order.
ABSMAX_LANES = 16


def token_codes(x: te.Tensor, row_multiple: int, activation_group_size: int | None = None) -> tuple[te.Tensor, te.Tensor]:
    """``(codes, peak)``: int8 codes of ``x [M, K]`` per row and activation group of ``activation_group_size``
    inputs (``None``: the row; rows padded up to ``row_multiple``) and each group's range ``r [M, K / A]`` (see the
    module docstring). Precondition: ``activation_group_size`` divides ``K``."""
    rows, in_features = x.shape
    width = int(in_features) if activation_group_size is None else activation_group_size
    groups = int(in_features) // width
    lanes = ABSMAX_LANES if width % ABSMAX_LANES == 0 else 1
    r = te.reduce_axis((0, width // lanes), name="r")
    partial = te.compute((rows, groups, lanes), lambda m, a, lane: te.max(tirx.abs(x[m, a * width + r * lanes + lane]), axis=r),
                         name="token_absmax_lanes")
    lane = te.reduce_axis((0, lanes), name="lane")
    absmax = te.compute((rows, groups), lambda m, a: te.max(partial[m, a, lane], axis=lane), name="token_absmax")
    floor = tirx.const(TOKEN_RANGE_FLOOR, "float32")
    limit = tirx.const(float(ACTIVATION_LIMIT), "float32")
    inverse = te.compute((rows, groups), lambda m, a: limit / tirx.max(absmax[m, a], floor), name="token_inverse")

    def code(m: Any, k: Any) -> Any:
        row = tirx.min(m, rows - 1) if row_multiple > 1 else m
        group = tirx.floordiv(k, width) if groups > 1 else 0
        return tirx.max(tirx.min(tirx.nearbyint(x[row, k] * inverse[row, group]), limit), -limit).astype("int8")

    padded = tirx.floordiv(rows + (row_multiple - 1), row_multiple) * row_multiple if row_multiple > 1 else rows
    codes = te.compute((padded, in_features), code, name="quantize_activations")
    return codes, absmax


def w4a8_linear_te(x: te.Tensor, qweight: te.Tensor, scales: te.Tensor, bias: te.Tensor | None, group_size: int,
                   row_multiple: int, activation_group_size: int | None = None,
                   scale_code_bits: int | None = None, row_scales: te.Tensor | None = None) -> te.Tensor:
    """``out[m, n] = sum_g (sum_{k in g} code(x)[m, k] * (c[n, k] - 8)) * scale[g, n] * r[m, a(g)] / 127 (+ bias[n])``.

    ``qweight``: paired bytes (``slmc.quantization.w4a8_layout``) tiled ``[N/16, K/8, 16, 4]`` or plain
    ``[N, K/2]``; ``scales``: float16 ``[G, N]`` (transposed by the converter), or uint8 scale codes ``[G, N]``, or
    (``scale_code_bits`` 6) 6-bit codes packed four per three bytes ``[3 * ceil(G / 4), N]``, unpacked once per
    group and output channel (``scale_code_te.group_scale``); ``row_scales``: float16 ``[N]`` of scale codes, times
    each output before the bias in the epilogue (one multiply per output, where a separate ``aten.mul`` was one more
    kernel call, allocation and cast per linear); ``activation_group_size``: ``None`` per token.
    Preconditions: ``group_size`` divides ``K``, ``PAIR_BLOCK`` (8) divides ``K``; tiled: 8
    divides ``group_size``; ``slmc.quantization.ops.activation_group_problem`` finds none.
    """
    rows, in_features = x.shape
    groups = in_features // group_size
    codes, absmax = token_codes(x, row_multiple, activation_group_size)
    per_scale = (int(in_features) if activation_group_size is None else activation_group_size) // group_size
    mid = tirx.const(INT4_MID, "int32")
    if len(qweight.shape) == 4:
        tiles, _, width, depth = qweight.shape
        out_features = tiles * width
        unpacked = te.compute(  # two tiles per 64-byte block: tile kb in the low (even kb) or high (odd) nibbles
            (tiles, in_features // depth, width, depth),
            lambda t, kb, i, ki: nibble(qweight[t, tirx.floordiv(kb, 2), i, ki], tirx.floormod(kb, 2)).astype("int8"),
            name="unpacked_codes",
        )
        j = te.reduce_axis((0, group_size), name="j")
        offsets = te.compute((codes.shape[0], groups),
                             lambda m, g: te.sum(-mid * codes[m, g * group_size + j].astype("int32"), axis=j),
                             name="code_offset")
        kb = te.reduce_axis((0, group_size // depth), name="kb")
        ki = te.reduce_axis((0, depth), name="ki")
        dots = te.compute(  # the codes c stand for c - 8: the group's -8 * sum(x) is added with the rescale
            (codes.shape[0], groups, tiles, width),
            lambda m, g, t, i: te.sum(codes[m, g * group_size + kb * depth + ki].astype("int32")
                                      * unpacked[t, g * (group_size // depth) + kb, i, ki].astype("int32"), axis=[kb, ki]),
            name="int8_group_dot",
        )

        def dot(m: Any, g: Any, n: Any) -> Any:
            return dots[m, g, tirx.floordiv(n, width), tirx.floormod(n, width)] + offsets[m, g]
    else:
        out_features = qweight.shape[0]
        j = te.reduce_axis((0, group_size), name="j")
        plain = te.compute(
            (rows, groups, out_features),
            lambda m, g, n: te.sum(codes[m, g * group_size + j].astype("int32")
                                   * (paired_code(qweight, n, g * group_size + j) - mid), axis=j),
            name="int8_group_dot",
        )

        def dot(m: Any, g: Any, n: Any) -> Any:
            return plain[m, g, n]

    floor = tirx.const(TOKEN_RANGE_FLOOR, "float32")
    limit = tirx.const(float(ACTIVATION_LIMIT), "float32")
    token_scale = te.compute(absmax.shape, lambda m, a: tirx.max(absmax[m, a], floor) / limit, name="token_scale")
    g = te.reduce_axis((0, groups), name="g")

    def activation_scale(m: Any, g: Any) -> Any:  # the scale of the activation group holding weight group g
        row = tirx.min(m, rows - 1) if row_multiple > 1 else m
        if per_scale == int(groups):
            return token_scale[row, 0]
        return token_scale[row, g if per_scale == 1 else tirx.floordiv(g, per_scale)]

    rescaled = te.compute(  # each group's term carries its activation scale: the epilogue reads this stage only
        (codes.shape[0], out_features),
        lambda m, n: te.sum(dot(m, g, n).astype("float32") * group_scale(lambda column: scales[column, n], g, scale_code_bits)
                            * activation_scale(m, g), axis=g),
        name="group_rescale",
    )

    def epilogue(m: Any, n: Any) -> Any:
        out = rescaled[m, n] * row_scales[n].astype("float32") if row_scales is not None else rescaled[m, n]
        return out + bias[n] if bias is not None else out

    return te.compute((rows, out_features), epilogue, name="requantize")
