"""TVM lowering of slmc's quantized ops: one kernel each, dequantization fused into the matmul.

The weights reach the kernel packed (uint8 codes -- tiled int4 codes read as uint32 words of 8
nibbles, ``_code_layout`` --, float16 scales or uint8 scale codes -- 6-bit ones packed four per three
bytes, unpacked where read: ``_scale`` --, uint8 zero points; int8 for
``w8a8_linear``; ``w4a8_linear``'s kernel is ``slmc.quantization.w4a8_kernel``): the dequantized value of each weight is computed inside the reduction, where it
is used, so no float32 copy of any weight exists at run time. The kernels are tensor-expression
(TE) definitions emitted as ``call_tir`` of their own PrimFuncs; each PrimFunc carries the
attribute ``slmc.kernel`` naming its kind, which slmc's schedule rules
(``slmc.quantization.schedules``) recognise.

These converters are registered with TVM's torch frontend through ``custom_convert_map``
(``CONVERTERS``, keyed by the op's ``__name__``, e.g. ``quantized_linear.default``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tvm import DataType, relax, te, tirx

from slmc.errors import NodeError
from slmc.quantization.ops import INT4_MID, QUANTIZED_LINEAR, activation_group_problem, reciprocal
from slmc.quantization.scale_code_te import group_scale as _scale
from slmc.quantization.w4a8_kernel import paired_code, w4a8_linear_te
from slmc.quantization.w4a8_layout import PAIR_BLOCK

KERNEL_ATTR = "slmc.kernel"


def _code(qweight: te.Tensor, n: Any, k: Any, bits: int, transposed: bool = False) -> Any:
    """The unsigned code of weight ``[n, k]`` as float32 (``transposed``: ``qweight`` is stored ``[K', N]``)."""
    def at(row: Any, col: Any) -> Any:
        return qweight[col, row] if transposed else qweight[row, col]

    if bits == 8:
        return at(n, k).astype("float32")
    byte = at(n, tirx.floordiv(k, 2))
    shift = (tirx.floormod(k, 2) * 4).astype("uint8")
    return tirx.bitwise_and(tirx.shift_right(byte, shift), tirx.const(15, "uint8")).astype("float32")


def dequantized(qweight: te.Tensor, scales: te.Tensor, zeros: te.Tensor | None, bits: int, group_size: int,
                n: Any, k: Any, transposed: bool = False, scale_code_bits: int | None = None) -> Any:
    """``(code - zero) * scale`` of weight ``[n, k]``, as an expression (never a buffer).

    ``transposed``: codes, scales and zero points are stored ``[K', N]`` / ``[G, N]`` (prepacked,
    ``slmc.schedules.prepack``), so that consecutive output channels are contiguous. ``scale_code_bits``: 6 for
    packed 6-bit scale codes (``_scale``).
    """
    group = tirx.floordiv(k, group_size)

    def read(table: te.Tensor) -> Callable[[Any], Any]:
        return lambda column: table[column, n] if transposed else table[n, column]

    zero = read(zeros)(group).astype("float32") if zeros is not None else tirx.const(2.0 ** (bits - 1), "float32")
    return (_code(qweight, n, k, bits, transposed) - zero) * _scale(read(scales), group, scale_code_bits)


def _scaled(x: te.Tensor, input_scale: te.Tensor | None) -> te.Tensor:
    if input_scale is None:
        return x
    return te.compute(x.shape, lambda m, k: x[m, k] * input_scale[k], name="scaled_input")


LINEAR_TILE_WIDTHS = (64, 32, 16)  # output channels per weight tile of quantized_linear, widest first


def linear_tile_width(out_features: int) -> int | None:
    """Output channels per tile of a quantized linear's weights: the widest of ``LINEAR_TILE_WIDTHS``
    dividing ``out_features`` (``None``: the kernel reads the untiled ``[K', N]`` layout)."""
    return next((w for w in LINEAR_TILE_WIDTHS if out_features % w == 0), None)


NIBBLES_PER_WORD = 8  # int4 codes per uint32 word of the tiled layout


def _tiled_code(qweight: te.Tensor, tile: Any, k: Any, lane: Any, bits: int) -> Any:
    """The unsigned code of input ``k``, channel ``lane`` of ``tile`` in tiled codes, as an integer:
    int8 ``[N/nb, K, nb]`` bytes; int4 ``[N/nb, K/8, nb]`` uint32 words (``word_layout``), input ``8w + j``
    in bits ``4j..4j+3`` of word ``w``."""
    if bits == 8:
        return qweight[tile, k, lane].astype("int32")
    return _word_nibble(qweight, tile, k, lane).astype("int32")


def _word_nibble(qweight: te.Tensor, tile: Any, k: Any, lane: Any) -> Any:
    """The uint32 nibble of input ``k``, channel ``lane`` of ``tile`` in int4 words ``[N/nb, K/8, nb]``."""
    word = qweight[tile, tirx.floordiv(k, NIBBLES_PER_WORD), lane]
    shift = (tirx.floormod(k, NIBBLES_PER_WORD) * 4).astype("uint32")
    return tirx.bitwise_and(tirx.shift_right(word, shift), tirx.const(15, "uint32"))


ONE_BITS = 0x3F800000  # float32 1.0
UNIT_SHIFT = 19  # a nibble in mantissa bits 19..22 of 1.0 is 1 + code/16


def _unit_code(qweight: te.Tensor, tile: Any, k: Any, lane: Any, bits: int) -> Any:
    """The float the group-factored sum multiplies ``x`` by: ``float(code)`` for int8; for int4
    ``1 + code / 16``, built without a conversion by placing the nibble in the top mantissa bits of
    1.0: per 16 weights one shift and one ``vpternlogd`` (and + or) on a vector of words, no
    shuffles, no ``vcvtdq2ps`` (the offset ``1`` is removed once per group: ``_group_factored_matmul``)."""
    if bits == 8:
        return _tiled_code(qweight, tile, k, lane, bits).astype("float32")
    nibble = _word_nibble(qweight, tile, k, lane)
    pattern = tirx.bitwise_or(tirx.shift_left(nibble, tirx.const(UNIT_SHIFT, "uint32")), tirx.const(ONE_BITS, "uint32"))
    return tirx.reinterpret("float32", pattern)


def _group_factored_matmul(xs: te.Tensor, qweight: te.Tensor, scales: te.Tensor, zeros: te.Tensor | None, bits: int,
                           group_size: int, scale_code_bits: int | None = None) -> te.Tensor:
    """``out[m, n] = sum_g scale[g, n] * (sum_{k in g} x[m, k] * code[k, n] - zero[g, n] * sum_{k in g} x[m, k])``.

    The same sum as ``sum_k x[m, k] * (code[k, n] - zero[g, n]) * scale[g, n]``, regrouped so that the
    reduction over ``k`` multiplies by the raw codes only (one FMA per weight, no per-weight subtract,
    multiply or scale load); the zero point and the scale are applied once per group. Codes, scales
    and zero points are tiled ``[N/nb, K', nb]`` / ``[N/nb, G, nb]``: the ``nb`` channels of one tile
    are one contiguous block, streamed front to back by one parallel chunk. The unpacked codes are
    a stage of their own (``unpacked_codes``, float32 ``[N/nb, K, nb]`` as written): the CPU schedule
    (``slmc.schedules.quantized_matmul``) inlines it in decode and computes one ``[group, nb]`` block
    of it at a time in prefill, so no float copy of the weight exists at run time.

    int4 codes are words of 8 nibbles (``word_layout``) and the unpacked value is ``u = 1 + code / 16``
    (``_unit_code``): ``sum x * code = 16 * (sum x * u - sum x)``, so a group contributes
    ``scale * (16 * dot - (16 + zero) * xsum)``; the same sum up to float rounding. Packed 6-bit scale codes
    (``scale_code_bits`` 6) are unpacked once per group, where the scale is applied (``_scale``).
    """
    rows, in_features = xs.shape
    tiles, _, width = qweight.shape
    groups = in_features // group_size
    r = te.reduce_axis((0, group_size), name="r")
    sums = te.compute((rows, groups), lambda m, g: te.sum(xs[m, g * group_size + r], axis=r), name="group_sum")
    codes = te.compute((tiles, in_features, width),  # a stage of its own: the schedule inlines it or reuses it across rows
                       lambda t, k, lane: _unit_code(qweight, t, k, lane, bits), name="unpacked_codes")
    i = te.reduce_axis((0, group_size), name="i")
    dots = te.compute(
        (rows, tiles * width, groups),
        lambda m, n, g: te.sum(xs[m, g * group_size + i] * codes[n // width, g * group_size + i, n % width], axis=i),
        name="group_dot",
    )

    def at(table: te.Tensor, g: Any, n: Any) -> Any:
        return table[n // width, g, n % width].astype("float32")

    g = te.reduce_axis((0, groups), name="g")
    unit = tirx.const(16.0 if bits == 4 else 1.0, "float32")  # int4: dots of u = 1 + code / 16 (_unit_code)
    lift = 16.0 if bits == 4 else 0.0  # ... so code = 16 * u - 16
    mid = tirx.const(2.0 ** (bits - 1) + lift, "float32")

    def offset(g: Any, n: Any) -> Any:  # what multiplies the group's input sum: zero point (+ int4's lift)
        return at(zeros, g, n) + tirx.const(lift, "float32") if zeros is not None else mid

    return te.compute(
        (rows, tiles * width),
        lambda m, n: te.sum((dots[m, n, g] * unit - offset(g, n) * sums[m, g])
                            * _scale(lambda column: scales[n // width, column, n % width], g, scale_code_bits), axis=g),
        name="dequant_matmul",
    )


def quantized_linear_te(x: te.Tensor, qweight: te.Tensor, scales: te.Tensor, zeros: te.Tensor | None,
                        bias: te.Tensor | None, input_scale: te.Tensor | None, bits: int, group_size: int,
                        scale_code_bits: int | None = None) -> te.Tensor:
    """``out[m, n] = sum_k x'[m, k] * dequantized(n, k) (+ bias[n])`` with ``x' = x * input_scale``.

    Two layouts of ``qweight``, ``scales`` and ``zeros``, both read through ``permute_dims`` /
    ``reshape`` chains that ``slmc.schedules.prepack`` folds into the stored weights:
    tiled ``[N/nb, K', nb]`` / ``[N/nb, G, nb]`` (``linear_tile_width``; the group-factored sum of
    ``_group_factored_matmul``), or transposed ``[K', N]`` / ``[G, N]`` (each weight dequantized
    inside the reduction) when no tile width divides ``N``. Precondition: ``group_size`` divides
    ``K`` (``QuantFormat.check_shape``). ``scale_code_bits`` 6: ``scales`` are 6-bit codes packed four per three
    bytes (``[N/nb, 3 * ceil(G / 4), nb]`` / ``[3 * ceil(G / 4), N]``; ``_scale``).
    """
    rows, in_features = x.shape
    xs = _scaled(x, input_scale)
    if len(qweight.shape) == 3:
        out = _group_factored_matmul(xs, qweight, scales, zeros, bits, group_size, scale_code_bits)
    else:
        k = te.reduce_axis((0, in_features), name="k")
        out = te.compute(
            (rows, qweight.shape[1]),
            lambda m, n: te.sum(xs[m, k] * dequantized(qweight, scales, zeros, bits, group_size, n, k, transposed=True,
                                                       scale_code_bits=scale_code_bits), axis=k),
            name="dequant_matmul",
        )
    if bias is None:
        return out
    return te.compute(out.shape, lambda m, n: out[m, n] + bias[n], name="bias_add")


def _tiled_dequantized(qweight: te.Tensor, scales: te.Tensor, zeros: te.Tensor | None, bits: int, group_size: int,
                       n: Any, k: Any, scale_code_bits: int | None = None) -> Any:
    """``(code - zero) * scale`` of weight ``[n, k]`` stored tiled ``[N/nb, K', nb]`` / ``[N/nb, G, nb]``."""
    width = int(qweight.shape[2])
    tile, lane, group = tirx.floordiv(n, width), tirx.floormod(n, width), tirx.floordiv(k, group_size)
    zero = zeros[tile, group, lane].astype("float32") if zeros is not None else tirx.const(2.0 ** (bits - 1), "float32")
    scale = _scale(lambda column: scales[tile, column, lane], group, scale_code_bits)
    return (_tiled_code(qweight, tile, k, lane, bits).astype("float32") - zero) * scale


def quantized_embedding_te(ids: te.Tensor, qweight: te.Tensor, scales: te.Tensor, zeros: te.Tensor | None,
                           bits: int, group_size: int, transposed: bool = False,
                           scale_code_bits: int | None = None) -> te.Tensor:
    """Rows ``ids`` (1-D, in range: the runtime checks token ids) of the dequantized table.

    The table is stored as rows ``[N, K']``, or -- when a tied output head reads the same codes -- in
    that head's layout (``quantized_linear_te``): tiled ``[N/nb, K', nb]`` (3-D) or ``transposed``
    ``[K', N]``. A gather from those reads one row at a stride: a few microseconds per token, and the
    table is stored once. ``scale_code_bits`` 6: packed 6-bit scale codes (``_scale``)."""
    if len(qweight.shape) == 3:
        width = qweight.shape[1] * (DataType(qweight.dtype).bits // bits)
        return te.compute((ids.shape[0], width),
                          lambda i, k: _tiled_dequantized(qweight, scales, zeros, bits, group_size, ids[i].astype("int64"), k,
                                                          scale_code_bits),
                          name="dequant_take")
    width = qweight.shape[0 if transposed else 1] * 8 // bits
    return te.compute((ids.shape[0], width),
                      lambda i, k: dequantized(qweight, scales, zeros, bits, group_size, ids[i].astype("int64"), k,
                                               transposed=transposed, scale_code_bits=scale_code_bits),
                      name="dequant_take")


def w4a8_embedding_te(ids: te.Tensor, qweight: te.Tensor, scales: te.Tensor, group_size: int,
                      scale_code_bits: int | None = None) -> te.Tensor:
    """Rows ``ids`` (1-D, in range: the runtime checks token ids) of a table stored as ``w4a8_linear``'s weight:
    ``(c[n, k] - 8) * scale[g(k), n]``, from whatever layout the converter gives the linear (``_w4a8_code_layout``:
    tiled or plain, both read by ``w4a8_kernel.paired_code``); ``scales`` ``[G, N]`` (or their scale codes: ``_scale``).
    A gather of one row reads ``K/2`` bytes at a stride of 64: microseconds per token, and the table is stored once."""
    mid = tirx.const(float(INT4_MID), "float32")

    def value(i: Any, k: Any) -> Any:
        n = ids[i].astype("int64")
        scale = _scale(lambda column: scales[column, n], tirx.floordiv(k, group_size), scale_code_bits)
        return (paired_code(qweight, n, k).astype("float32") - mid) * scale

    in_features = qweight.shape[1] * (PAIR_BLOCK if len(qweight.shape) == 4 else 2)
    return te.compute((ids.shape[0], in_features), value, name="dequant_take")


DOT_TILE = (16, 4)  # int8 dot-product weight tile: output channels x inputs (slmc.schedules.int8_matmul)
DOT_ROWS = 2  # the tiled kernel's activation rows come in pairs (each weight tile loaded once per pair)


def _activation_codes(x: te.Tensor, input_scale: te.Tensor | None, activation_scale: float,
                      row_multiple: int = 1) -> te.Tensor:
    """int8 codes of ``x * input_scale / activation_scale``; rows padded up to a multiple of
    ``row_multiple`` with copies of the last row (computed alongside, never written out)."""
    xs = _scaled(x, input_scale)
    rows, in_features = x.shape
    limit = tirx.const(127.0, "float32")
    inverse = tirx.const(reciprocal(activation_scale), "float32")

    def code(m: Any, k: Any) -> Any:
        return tirx.max(tirx.min(tirx.nearbyint(xs[m, k] * inverse), limit), -limit).astype("int8")

    if row_multiple == 1:
        return te.compute(x.shape, code, name="quantize_activations")
    padded = tirx.floordiv(rows + (row_multiple - 1), row_multiple) * row_multiple
    return te.compute((padded, in_features), lambda m, k: code(tirx.min(m, rows - 1), k), name="quantize_activations")


def _int8_matmul(codes: te.Tensor, qweight: te.Tensor) -> Callable[[Any, Any], Any]:
    """``acc(m, n) = sum_k x[m, k] * w[n, k]``, int32 accumulation, on an ``[N, K]`` weight or one
    tiled ``[N/16, K/4, 16, 4]`` (16 channels x 4 inputs contiguous: one int8 dot-product tile)."""
    if len(qweight.shape) == 2:
        k = te.reduce_axis((0, codes.shape[1]), name="k")
        plain = te.compute(
            (codes.shape[0], qweight.shape[0]),
            lambda m, n: te.sum(codes[m, k].astype("int32") * qweight[n, k].astype("int32"), axis=k),
            name="int8_matmul",
        )
        return lambda m, n: plain[m, n]
    tiles, blocks, width, depth = qweight.shape
    ko = te.reduce_axis((0, blocks), name="ko")
    ki = te.reduce_axis((0, depth), name="ki")
    tiled = te.compute(
        (codes.shape[0], tiles, width),
        lambda m, t, i: te.sum(codes[m, ko * depth + ki].astype("int32") * qweight[t, ko, i, ki].astype("int32"),
                               axis=[ko, ki]),
        name="int8_dot_matmul",
    )
    return lambda m, n: tiled[m, tirx.floordiv(n, width), tirx.floormod(n, width)]


def w8a8_linear_te(x: te.Tensor, qweight: te.Tensor, weight_scales: te.Tensor, bias: te.Tensor | None,
                   input_scale: te.Tensor | None, activation_scale: float) -> te.Tensor:
    """int8 activations x int8 weights, int32 accumulation, float32 rescale (see ``ops.w8a8_linear``).

    ``qweight`` is ``[N, K]``, or tiled ``[N/16, K/4, 16, 4]`` (``DOT_TILE``: what the converter
    emits when 16 divides ``N`` and 4 divides ``K``; ``slmc.schedules.int8_matmul`` maps each tile
    onto the target's int8 dot-product instructions, for ``DOT_ROWS`` rows at a time: the tiled
    kernel's codes are padded to a multiple of it). Both give the same int32 sums bit for bit.
    """
    tiled = len(qweight.shape) == 4
    codes = _activation_codes(x, input_scale, activation_scale, DOT_ROWS if tiled else 1)
    accumulated = _int8_matmul(codes, qweight)
    out_features = qweight.shape[0] * qweight.shape[2] if tiled else qweight.shape[0]
    scale = tirx.const(activation_scale, "float32")

    def rescale(m: Any, n: Any) -> Any:
        value = accumulated(m, n).astype("float32") * (scale * weight_scales[n])
        return value + bias[n] if bias is not None else value

    return te.compute((x.shape[0], out_features), rescale, name="requantize")


def _flatten(bb: relax.BlockBuilder, x: relax.Expr) -> tuple[relax.Expr, list[Any]]:
    """``x [..., K]`` -> ``[M, K]`` plus the leading shape to restore."""
    shape = list(x.ty.shape.values)
    if len(shape) == 2:
        return x, shape[:-1]
    rows = 1
    for size in shape[:-1]:
        rows = rows * size
    return bb.emit(relax.op.reshape(x, [rows, shape[-1]])), shape[:-1]


def _restore(bb: relax.BlockBuilder, out: relax.Expr, leading: list[Any]) -> relax.Expr:
    if len(leading) == 1:
        return out
    width = out.ty.shape.values[-1]
    return bb.emit(relax.op.reshape(out, [*leading, width]))


def _kernel_name(kind: str, *parts: Any) -> str:
    return "_".join([kind, *(str(p) for p in parts if p not in (None, ""))])


def _weight_layout(bb: relax.BlockBuilder, table: relax.Expr, width: int | None) -> relax.Expr:
    """``[N, C]`` -> tiled ``[N/width, C, width]`` (or ``[C, N]`` when ``width`` is None), as a
    reshape/permute chain that ``slmc.schedules.prepack`` applies to the stored weight once."""
    if width is None:
        return bb.emit(relax.op.permute_dims(table))
    rows, cols = (int(v) for v in table.ty.shape.values)
    return bb.emit(relax.op.permute_dims(bb.emit(relax.op.reshape(table, [rows // width, width, cols])), [0, 2, 1]))


def word_layout(in_features: int, bits: int, group_size: int) -> bool:
    """Whether tiled int4 codes are stored as uint32 words of 8 nibbles (``_tiled_code``): 8 divides
    ``K`` and the group (a word never spans two groups)."""
    return bits == 4 and in_features % NIBBLES_PER_WORD == 0 and group_size % NIBBLES_PER_WORD == 0


def _code_layout(bb: relax.BlockBuilder, qweight: relax.Expr, bits: int, group_size: int) -> tuple[relax.Expr, int | None]:
    """Packed codes ``[N, K']`` in the layout of the kernel (``quantized_linear_te``) and its tile width
    (``None``: transposed ``[K', N]``). int4 tiles are of uint32 words: the bytes of a row viewed as
    little-endian words (bits ``4j..4j+3`` of word ``w`` = input ``8w + j``, ``formats.pack``'s nibble
    order; every slmc CPU target is little-endian), then tiled; int4 codes that cannot be words are
    read transposed. ``slmc.schedules.prepack`` stores the result of the whole chain."""
    out_features, packed = (int(v) for v in qweight.ty.shape.values)
    width = linear_tile_width(out_features)
    if bits == 4 and width is not None:
        in_features = packed * 2
        if not word_layout(in_features, bits, group_size):
            return _weight_layout(bb, qweight, None), None
        qweight = bb.emit(relax.op.memory.view(qweight, [out_features, in_features // NIBBLES_PER_WORD], "uint32"))
    return _weight_layout(bb, qweight, width), width


def _convert_quantized_linear(node: Any, importer: Any) -> relax.Var:
    x, qweight, scales, zeros, bias, input_scale, bits, group_size, *rest = importer.retrieve_args(node)
    scale_code_bits = _scale_code_bits(rest)
    bb = importer.block_builder
    flat, leading = _flatten(bb, x)
    name = _kernel_name("slmc_qlinear", f"int{bits}", f"g{group_size}", "asym" if zeros is not None else "sym",
                        f"s{scale_code_bits}" if scale_code_bits else "")
    qweight, width = _code_layout(bb, qweight, int(bits), int(group_size))
    scales = _weight_layout(bb, scales, width)
    zeros = _weight_layout(bb, zeros, width) if zeros is not None else None
    out = bb.emit_te(quantized_linear_te, flat, qweight, scales, zeros, bias, input_scale, int(bits), int(group_size),
                     scale_code_bits, primfunc_name_hint=name, primfunc_attrs={KERNEL_ATTR: "quantized_linear"})
    return _restore(bb, out, leading)


def _scale_code_bits(rest: list[Any]) -> int | None:
    """The quantized ops' optional trailing ``scale_code_bits`` argument (``None``: one scale element per group)."""
    return int(rest[0]) if rest and rest[0] is not None else None


def _read_by_linear(codes: Any) -> bool:
    """Whether the exported program's node ``codes`` (a quantized gather's table) is also read by a quantized
    linear layer: a tied output head whose packed codes the embedding shares (``passes/quantize.py``)."""
    return any(getattr(user, "target", None) is QUANTIZED_LINEAR for user in getattr(codes, "users", ()))


def _convert_quantized_embedding(node: Any, importer: Any) -> relax.Var:
    ids, qweight, scales, zeros, bits, group_size, *rest = importer.retrieve_args(node)
    scale_code_bits = _scale_code_bits(rest)
    bb = importer.block_builder
    shape = list(ids.ty.shape.values)
    flat = ids
    if len(shape) != 1:
        count = 1
        for size in shape:
            count = count * size
        flat = bb.emit(relax.op.reshape(ids, [count]))
    name = _kernel_name("slmc_qembedding", f"int{bits}", f"g{group_size}", f"s{scale_code_bits}" if scale_code_bits else "")
    transposed = False
    if _read_by_linear(node.args[1]):  # a tied head's codes: read them in its layout, so prepack stores one table
        qweight, width = _code_layout(bb, qweight, int(bits), int(group_size))
        scales = _weight_layout(bb, scales, width)
        zeros = _weight_layout(bb, zeros, width) if zeros is not None else None
        transposed = width is None
    out = bb.emit_te(quantized_embedding_te, flat, qweight, scales, zeros, int(bits), int(group_size), transposed,
                     scale_code_bits, primfunc_name_hint=name, primfunc_attrs={KERNEL_ATTR: "quantized_embedding"})
    if len(shape) == 1:
        return out
    return bb.emit(relax.op.reshape(out, [*shape, out.ty.shape.values[-1]]))


def _convert_w8a8_linear(node: Any, importer: Any) -> relax.Var:
    x, qweight, weight_scales, bias, input_scale, activation_scale = importer.retrieve_args(node)
    bb = importer.block_builder
    flat, leading = _flatten(bb, x)
    out_features, in_features = (int(v) for v in qweight.ty.shape.values)
    width, depth = DOT_TILE
    if out_features % width == 0 and in_features % depth == 0:  # tiled: stored so at compile time (prepack)
        tiles = bb.emit(relax.op.reshape(qweight, [out_features // width, width, in_features // depth, depth]))
        qweight = bb.emit(relax.op.permute_dims(tiles, [0, 2, 1, 3]))
    out = bb.emit_te(w8a8_linear_te, flat, qweight, weight_scales, bias, input_scale, float(activation_scale),
                     primfunc_name_hint="slmc_w8a8_linear", primfunc_attrs={KERNEL_ATTR: "w8a8_linear"})
    return _restore(bb, out, leading)


def _w4a8_code_layout(bb: relax.BlockBuilder, qweight: relax.Expr, group_size: int) -> tuple[relax.Expr, bool]:
    """Paired int4 bytes ``[N, K/2]`` in ``w4a8_linear``'s kernel layout and whether it is tiled: ``[N/16, K/8, 16, 4]``
    when 16 divides ``N`` and ``PAIR_BLOCK`` the group size, else as stored. A reshape/permute chain that
    ``slmc.schedules.prepack`` applies to the stored weight once; the tied gather (``w4a8_embedding``) emits the
    same chain, so both read one stored array."""
    out_features, packed = (int(v) for v in qweight.ty.shape.values)
    width, depth = DOT_TILE
    if out_features % width or group_size % PAIR_BLOCK:
        return qweight, False
    tiles = bb.emit(relax.op.reshape(qweight, [out_features // width, width, packed * 2 // PAIR_BLOCK, depth]))
    return bb.emit(relax.op.permute_dims(tiles, [0, 2, 1, 3])), True


def _convert_w4a8_embedding(node: Any, importer: Any) -> relax.Var:
    """``w4a8_embedding``: the table read in ``w4a8_linear``'s layout (codes ``_w4a8_code_layout``, scales
    transposed ``[G, N]``) whether or not a tied head reads it too, so the two converters emit one relayout
    chain per stored tensor and ``slmc.schedules.prepack`` stores it once (as ``_convert_quantized_embedding``
    follows ``quantized_linear``'s layout for a tied weight-only head)."""
    ids, qweight, scales, group_size, *rest = importer.retrieve_args(node)
    scale_code_bits = _scale_code_bits(rest)
    bb = importer.block_builder
    shape = list(ids.ty.shape.values)
    flat = ids if len(shape) == 1 else bb.emit(relax.op.reshape(ids, [-1]))
    qweight, _ = _w4a8_code_layout(bb, qweight, int(group_size))
    name = _kernel_name("slmc_w4a8_embedding", f"g{group_size}", f"s{scale_code_bits}" if scale_code_bits else "")
    out = bb.emit_te(w4a8_embedding_te, flat, qweight, _weight_layout(bb, scales, None), int(group_size), scale_code_bits,
                     primfunc_name_hint=name, primfunc_attrs={KERNEL_ATTR: "w4a8_embedding"})
    if len(shape) == 1:
        return out
    return bb.emit(relax.op.reshape(out, [*shape, out.ty.shape.values[-1]]))


def _convert_w4a8_linear(node: Any, importer: Any) -> relax.Var:
    """``w4a8_linear`` (``slmc.quantization.w4a8_kernel``): paired int4 bytes ``[N, K/2]``
    (``slmc.quantization.w4a8_layout``) tiled ``[N/16, K/8, 16, 4]`` (16 channels x 4 bytes: two int8
    dot-product tiles of ``DOT_TILE``, one per nibble) when 16 divides ``N`` and ``PAIR_BLOCK`` the group
    size, scales transposed to ``[G, N]``; both relayouts are stored so at compile time
    (``slmc.schedules.prepack``). Row scales of scale codes (the op's last argument) multiply in the epilogue.
    Activations per token, or per ``activation_group_size`` inputs when the node
    gives one (``NodeError`` naming the node when ``activation_group_problem`` finds one). Scale codes (uint8, or
    6-bit packed with ``scale_code_bits`` 6) are read as the kernel's scales (``scale_code_te.group_scale``)."""
    x, qweight, scales, bias, group_size, *rest = importer.retrieve_args(node)
    activation_group = int(rest[0]) if rest and rest[0] is not None else None
    scale_code_bits = _scale_code_bits(rest[1:])
    row_scales = rest[2] if len(rest) > 2 else None
    bb = importer.block_builder
    flat, leading = _flatten(bb, x)
    out_features, packed = (int(v) for v in qweight.ty.shape.values)
    problem = activation_group_problem(packed * 2, int(group_size), activation_group)
    if problem is not None:
        raise NodeError(node.name, f"slmc.w4a8_linear: {problem}")
    qweight, tiled = _w4a8_code_layout(bb, qweight, int(group_size))
    name = _kernel_name("slmc_w4a8_linear", f"g{group_size}", f"a{activation_group}" if activation_group else "",
                        f"s{scale_code_bits}" if scale_code_bits else "")
    out = bb.emit_te(w4a8_linear_te, flat, qweight, _weight_layout(bb, scales, None), bias, int(group_size),
                     DOT_ROWS if tiled else 1, activation_group, scale_code_bits, row_scales, primfunc_name_hint=name,
                     primfunc_attrs={KERNEL_ATTR: "w4a8_linear"})
    return _restore(bb, out, leading)


CONVERTERS: dict[str, Callable[[Any, Any], relax.Var]] = {
    "quantized_linear.default": _convert_quantized_linear,
    "quantized_embedding.default": _convert_quantized_embedding,
    "w8a8_linear.default": _convert_w8a8_linear,
    "w4a8_linear.default": _convert_w4a8_linear,
    "w4a8_embedding.default": _convert_w4a8_embedding,
}
