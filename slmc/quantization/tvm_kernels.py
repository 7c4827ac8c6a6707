"""TVM lowering of slmc's quantized ops: one kernel each, dequantization fused into the matmul.

The weights reach the kernel packed (uint8 codes, float16 scales, uint8 zero points; int8 for
``w8a8_linear``): the dequantized value of each weight is computed inside the reduction, where it
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

from tvm import relax, te, tirx

from slmc.quantization.ops import reciprocal

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
                n: Any, k: Any, transposed: bool = False) -> Any:
    """``(code - zero) * scale`` of weight ``[n, k]``, as an expression (never a buffer).

    ``transposed``: codes, scales and zero points are stored ``[K', N]`` / ``[G, N]`` (prepacked,
    ``slmc.schedules.prepack``), so that consecutive output channels are contiguous.
    """
    group = tirx.floordiv(k, group_size)

    def at(table: te.Tensor) -> Any:
        return (table[group, n] if transposed else table[n, group]).astype("float32")

    zero = at(zeros) if zeros is not None else tirx.const(2.0 ** (bits - 1), "float32")
    return (_code(qweight, n, k, bits, transposed) - zero) * at(scales)


def _scaled(x: te.Tensor, input_scale: te.Tensor | None) -> te.Tensor:
    if input_scale is None:
        return x
    return te.compute(x.shape, lambda m, k: x[m, k] * input_scale[k], name="scaled_input")


def quantized_linear_te(x: te.Tensor, qweight: te.Tensor, scales: te.Tensor, zeros: te.Tensor | None,
                        bias: te.Tensor | None, input_scale: te.Tensor | None, bits: int, group_size: int) -> te.Tensor:
    """``out[m, n] = sum_k x'[m, k] * dequantized(n, k) (+ bias[n])`` with ``x' = x * input_scale``.

    ``qweight``, ``scales`` and ``zeros`` are transposed (``[K', N]``, ``[G, N]``): the converter
    reads them through ``permute_dims``, which ``slmc.schedules.prepack`` folds into the stored weights.
    """
    rows, in_features = x.shape
    out_features = qweight.shape[1]
    xs = _scaled(x, input_scale)
    k = te.reduce_axis((0, in_features), name="k")
    out = te.compute(
        (rows, out_features),
        lambda m, n: te.sum(xs[m, k] * dequantized(qweight, scales, zeros, bits, group_size, n, k, transposed=True),
                            axis=k),
        name="dequant_matmul",
    )
    if bias is None:
        return out
    return te.compute((rows, out_features), lambda m, n: out[m, n] + bias[n], name="bias_add")


def quantized_embedding_te(ids: te.Tensor, qweight: te.Tensor, scales: te.Tensor, zeros: te.Tensor | None,
                           bits: int, group_size: int) -> te.Tensor:
    """Rows ``ids`` (1-D, in range: the runtime checks token ids) of the dequantized table."""
    width = qweight.shape[1] * 8 // bits
    return te.compute((ids.shape[0], width),
                      lambda i, k: dequantized(qweight, scales, zeros, bits, group_size, ids[i].astype("int64"), k),
                      name="dequant_take")


def w8a8_linear_te(x: te.Tensor, qweight: te.Tensor, weight_scales: te.Tensor, bias: te.Tensor | None,
                   input_scale: te.Tensor | None, activation_scale: float) -> te.Tensor:
    """int8 activations x int8 weights, int32 accumulation, float32 rescale (see ``ops.w8a8_linear``)."""
    rows, in_features = x.shape
    out_features = qweight.shape[0]
    xs = _scaled(x, input_scale)
    limit = tirx.const(127.0, "float32")
    codes = te.compute(
        (rows, in_features),
        lambda m, k: tirx.max(tirx.min(tirx.nearbyint(xs[m, k] * tirx.const(reciprocal(activation_scale), "float32")), limit),
                              -limit).astype("int8"),
        name="quantize_activations",
    )
    k = te.reduce_axis((0, in_features), name="k")
    accumulated = te.compute(
        (rows, out_features),
        lambda m, n: te.sum(codes[m, k].astype("int32") * qweight[n, k].astype("int32"), axis=k),
        name="int8_matmul",
    )
    scale = tirx.const(activation_scale, "float32")

    def rescale(m: Any, n: Any) -> Any:
        value = accumulated[m, n].astype("float32") * (scale * weight_scales[n])
        return value + bias[n] if bias is not None else value

    return te.compute((rows, out_features), rescale, name="requantize")


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


def _convert_quantized_linear(node: Any, importer: Any) -> relax.Var:
    x, qweight, scales, zeros, bias, input_scale, bits, group_size = importer.retrieve_args(node)
    bb = importer.block_builder
    flat, leading = _flatten(bb, x)
    name = _kernel_name("slmc_qlinear", f"int{bits}", f"g{group_size}", "asym" if zeros is not None else "sym")
    qweight, scales = bb.emit(relax.op.permute_dims(qweight)), bb.emit(relax.op.permute_dims(scales))
    zeros = bb.emit(relax.op.permute_dims(zeros)) if zeros is not None else None
    out = bb.emit_te(quantized_linear_te, flat, qweight, scales, zeros, bias, input_scale, int(bits), int(group_size),
                     primfunc_name_hint=name, primfunc_attrs={KERNEL_ATTR: "quantized_linear"})
    return _restore(bb, out, leading)


def _convert_quantized_embedding(node: Any, importer: Any) -> relax.Var:
    ids, qweight, scales, zeros, bits, group_size = importer.retrieve_args(node)
    bb = importer.block_builder
    shape = list(ids.ty.shape.values)
    flat = ids
    if len(shape) != 1:
        count = 1
        for size in shape:
            count = count * size
        flat = bb.emit(relax.op.reshape(ids, [count]))
    name = _kernel_name("slmc_qembedding", f"int{bits}", f"g{group_size}")
    out = bb.emit_te(quantized_embedding_te, flat, qweight, scales, zeros, int(bits), int(group_size),
                     primfunc_name_hint=name, primfunc_attrs={KERNEL_ATTR: "quantized_embedding"})
    if len(shape) == 1:
        return out
    return bb.emit(relax.op.reshape(out, [*shape, out.ty.shape.values[-1]]))


def _convert_w8a8_linear(node: Any, importer: Any) -> relax.Var:
    x, qweight, weight_scales, bias, input_scale, activation_scale = importer.retrieve_args(node)
    bb = importer.block_builder
    flat, leading = _flatten(bb, x)
    out = bb.emit_te(w8a8_linear_te, flat, qweight, weight_scales, bias, input_scale, float(activation_scale),
                     primfunc_name_hint="slmc_w8a8_linear", primfunc_attrs={KERNEL_ATTR: "w8a8_linear"})
    return _restore(bb, out, leading)


CONVERTERS: dict[str, Callable[[Any, Any], relax.Var]] = {
    "quantized_linear.default": _convert_quantized_linear,
    "quantized_embedding.default": _convert_quantized_embedding,
    "w8a8_linear.default": _convert_w8a8_linear,
}
