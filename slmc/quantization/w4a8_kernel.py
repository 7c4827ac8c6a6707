"""TVM kernel of ``w4a8_linear``: dynamic per-token int8 activations x packed int4 weights, int32 group sums.

The tensor-expression stages (``slmc.kernel = "w4a8_linear"``; the converter is
``slmc.quantization.tvm_kernels``' ``_convert_w4a8_linear``):

- ``token_absmax`` / ``token_inverse``: ``r = max(max|x_row|, TOKEN_RANGE_FLOOR)`` and ``127 / r`` per row;
- ``quantize_activations``: int8 codes ``round(x * (127 / r))`` (half to even, saturated at ±127), rows
  padded to a multiple of ``row_multiple`` with copies of the last row (computed, never written out);
- ``unpacked_codes``: the signed int4 codes ``c - 8`` as int8, tile by tile (``[N/16, K/4, 16, 4]``:
  one int8 dot-product tile of ``slmc.schedules.int8_dot_intrinsics``), read from packed bytes
  ``[N/16, K/4, 16, 2]`` (the converter's reshape/permute of ``qweight [N, K/2]``, which
  ``slmc.schedules.prepack`` applies to the stored weight at compile time: 4 bits per weight in memory);
- ``int8_group_dot``: ``sum_{k in group g} x[m, k] * w[n, k]`` in int32, per group;
- ``token_scale``: ``r / 127`` per row;
- ``group_rescale``: ``sum_g float(dot[m, g, n]) * scale[g, n] * token_scale[m]`` in float32, the groups
  in order (the row's scale inside the sum, so that the epilogue reads this stage only: a schedule
  computes it per pair of rows, and TVM's ``reverse_compute_at`` refuses an epilogue with another
  producer outside the loop);
- ``requantize``: (+ bias).

The activation codes are the eager reference's bit for bit (``slmc.quantization.ops.w4a8_linear``);
its sum is a float32 matmul with the dequantized weight, equal to this one up to float32 rounding. ``slmc.schedules.int4_int8_matmul`` schedules it onto the
target's int8 dot-product instructions. Without tiles (16 does not divide ``N`` or 4 does not divide
the group size) the weight stays ``[N, K/2]`` and the codes are unpacked inside the reduction.
"""

from __future__ import annotations

from typing import Any

from tvm import te, tirx

from slmc.quantization.ops import ACTIVATION_LIMIT, INT4_MID, TOKEN_RANGE_FLOOR


def _signed_nibble(byte: Any, k: Any) -> Any:
    """The signed int4 code (``c - 8``, as int32) of input ``k`` in ``byte`` (even ``k``: the low nibble)."""
    code = tirx.bitwise_and(tirx.shift_right(byte.astype("int32"), tirx.floormod(k, 2) * 4), tirx.const(15, "int32"))
    return code - tirx.const(INT4_MID, "int32")


def token_codes(x: te.Tensor, row_multiple: int) -> tuple[te.Tensor, te.Tensor]:
    """``(codes, peak)``: int8 codes of ``x [M, K]`` per row (rows padded up to ``row_multiple``) and each
    row's range ``r`` (see the module docstring)."""
    rows, in_features = x.shape
    r = te.reduce_axis((0, in_features), name="r")
    absmax = te.compute((rows,), lambda m: te.max(tirx.abs(x[m, r]), axis=r), name="token_absmax")
    floor = tirx.const(TOKEN_RANGE_FLOOR, "float32")
    limit = tirx.const(float(ACTIVATION_LIMIT), "float32")
    inverse = te.compute((rows,), lambda m: limit / tirx.max(absmax[m], floor), name="token_inverse")

    def code(m: Any, k: Any) -> Any:
        row = tirx.min(m, rows - 1) if row_multiple > 1 else m
        return tirx.max(tirx.min(tirx.nearbyint(x[row, k] * inverse[row]), limit), -limit).astype("int8")

    padded = tirx.floordiv(rows + (row_multiple - 1), row_multiple) * row_multiple if row_multiple > 1 else rows
    codes = te.compute((padded, in_features), code, name="quantize_activations")
    return codes, absmax


def w4a8_linear_te(x: te.Tensor, qweight: te.Tensor, scales: te.Tensor, bias: te.Tensor | None, group_size: int,
                   row_multiple: int) -> te.Tensor:
    """``out[m, n] = sum_g (sum_{k in g} code(x)[m, k] * (c[n, k] - 8)) * scale[g, n] * r_m / 127 (+ bias[n])``.

    ``qweight``: packed bytes tiled ``[N/16, K/4, 16, 2]`` or plain ``[N, K/2]``; ``scales``: float16
    ``[G, N]`` (transposed by the converter). Preconditions: ``group_size`` divides ``K``; tiled:
    4 divides ``group_size``.
    """
    rows, in_features = x.shape
    groups = in_features // group_size
    codes, absmax = token_codes(x, row_multiple)
    if len(qweight.shape) == 4:
        tiles, _, width, _ = qweight.shape
        depth = 4
        out_features = tiles * width
        unpacked = te.compute(
            (tiles, in_features // depth, width, depth),
            lambda t, ko, i, ki: _signed_nibble(qweight[t, ko, i, tirx.floordiv(ki, 2)], ki).astype("int8"),
            name="unpacked_codes",
        )
        kb = te.reduce_axis((0, group_size // depth), name="kb")
        ki = te.reduce_axis((0, depth), name="ki")
        dots = te.compute(
            (codes.shape[0], groups, tiles, width),
            lambda m, g, t, i: te.sum(codes[m, g * group_size + kb * depth + ki].astype("int32")
                                      * unpacked[t, g * (group_size // depth) + kb, i, ki].astype("int32"), axis=[kb, ki]),
            name="int8_group_dot",
        )

        def dot(m: Any, g: Any, n: Any) -> Any:
            return dots[m, g, tirx.floordiv(n, width), tirx.floormod(n, width)]
    else:
        out_features = qweight.shape[0]
        j = te.reduce_axis((0, group_size), name="j")
        plain = te.compute(
            (rows, groups, out_features),
            lambda m, g, n: te.sum(codes[m, g * group_size + j].astype("int32")
                                   * _signed_nibble(qweight[n, tirx.floordiv(g * group_size + j, 2)], j), axis=j),
            name="int8_group_dot",
        )

        def dot(m: Any, g: Any, n: Any) -> Any:
            return plain[m, g, n]

    floor = tirx.const(TOKEN_RANGE_FLOOR, "float32")
    limit = tirx.const(float(ACTIVATION_LIMIT), "float32")
    token_scale = te.compute((rows,), lambda m: tirx.max(absmax[m], floor) / limit, name="token_scale")
    g = te.reduce_axis((0, groups), name="g")
    rescaled = te.compute(  # each group's term carries the row's scale: the epilogue reads this stage only
        (codes.shape[0], out_features),
        lambda m, n: te.sum(dot(m, g, n).astype("float32") * scales[g, n].astype("float32")
                            * token_scale[tirx.min(m, rows - 1) if row_multiple > 1 else m], axis=g),
        name="group_rescale",
    )

    def epilogue(m: Any, n: Any) -> Any:
        return rescaled[m, n] + bias[n] if bias is not None else rescaled[m, n]

    return te.compute((rows, out_features), epilogue, name="requantize")
