"""The kernel from a layer's q/k/v projection rows to its attention query and cache slot, in one pass.

For one new token (the decode step, ``slmc.schedules.one_token``) and one layer, with ``x`` a head's row of
``D`` numbers and the rotary tables ``cos``, ``sin`` of the token's position (Su et al., "RoFormer: Enhanced
Transformer with Rotary Position Embedding", arXiv:2104.09864; the rotate-half form of HF Llama)::

    rot(x)[d]            = x[d] * cos[d] + (-x[d + D/2]) * sin[d]          d <  D/2
    rot(x)[d]            = x[d] * cos[d] +   x[d - D/2]  * sin[d]          d >= D/2
    query[h, 0, :]       = rot(q_rows[q_offset + h D : q_offset + (h + 1) D])            h < H
    keys[layer, 0, h, past, :]   = stored(rot(k_rows[k_offset + h D : ...]))           h < H_kv
    values[layer, 0, h, past, :] = stored(v_rows[v_offset + h D : ...])

``stored``: the number itself (float32 cache), rounded to the nearest float16 (float16 cache), or an int8 row
with its scale (``max|x| / 127``, ``round(x / scale)``: ``slmc.schedules.resident_kv.write_int8_row``, which the
int8 cache's own write runs too). The
products and the sum are the ones TVM's legalized ``add(multiply(x, cos), multiply(concat(-hi, lo), sin))``
computes, in the same order. The caches (and an int8 cache's scales) are written in place; the query is the
kernel's one new output. One token, so the loops are short (SmolLM-135M: 15 + 2 x 3 heads of 64): serial,
``tirx.is_scheduled``, no parallel region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tvm import tirx
from tvm.script import tirx as T

from slmc.schedules.flash_attention import OPAQUE
from slmc.schedules.kv_append import LAYER_ATTR
from slmc.schedules.resident_kv import write_int8_row
from slmc.schedules.row_matmul import STACK_SCOPE
from slmc.schedules.rule import KERNEL_ATTR

KIND = "rotary_kv_write"


@dataclass(frozen=True)
class RotaryShape:
    """One layer's static sizes: the rows each of q, k, v is read from (``width`` numbers, ``offset`` of the
    first), head counts, head size ``dim`` (even), the cache's ``layers`` / ``slots`` and stored dtype."""

    layer: int
    layers: int
    slots: int
    heads: int
    kv_heads: int
    dim: int
    rows: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # each ``[1, ..., 1, W]``
    offsets: tuple[int, int, int]
    stored: str  # float32, float16 or int8


def _cast(dtype: str, value: Any) -> Any:
    return value if dtype == "float32" else T.Cast(dtype, value)


def _at(rows: Any, index: Any) -> Any:
    """Number ``index`` of a ``[1, ..., 1, W]`` row buffer."""
    return rows[(*[T.int64(0)] * (len(rows.shape) - 1), index)]


def _rotated(rows: Any, first: Any, d: Any, half: int, cos: Any, sin: Any, upper: bool) -> Any:
    """Number ``d`` (``d + D/2`` when ``upper``) of the rotated head whose row starts at ``rows[first]``, ``d < D/2``:
    ``x[d] cos[d] + (-x[d + D/2]) sin[d]``, or ``x[d + D/2] cos[d + D/2] + x[d] sin[d + D/2]``."""
    lo, hi = _at(rows, first + d), _at(rows, first + d + T.int64(half))
    if upper:
        return hi * cos[0, 0, 0, d + T.int64(half)] + lo * sin[0, 0, 0, d + T.int64(half)]
    return lo * cos[0, 0, 0, d] + (-hi) * sin[0, 0, 0, d]


def rotary_kv_write_func(shape: RotaryShape) -> tirx.PrimFunc:
    """The kernel (module docstring). Parameters: ``q_rows, k_rows, v_rows [1, ..., 1, W]``, ``cos, sin [1, 1, 1, D]``,
    ``keys, values [layers, 1, H_kv, slots, D]`` (int8: then ``key_scales, value_scales [layers, 1, H_kv, slots]``),
    ``past``, and the output ``query [H, 1, D]`` float32."""
    if shape.stored == "int8":
        return _int8_func(shape)
    i64 = T.int64
    layer, heads, kv_heads, dim, half = shape.layer, shape.heads, shape.kv_heads, shape.dim, shape.dim // 2
    (rq, rk, rv), (oq, ok, ov), stored = shape.rows, shape.offsets, shape.stored
    cache_shape = (shape.layers, 1, kv_heads, shape.slots, dim)

    @T.prim_func(private=True, s_tir=True)
    def rotary_kv_write(q_h: T.handle, k_h: T.handle, v_h: T.handle, cos_h: T.handle, sin_h: T.handle,
                        keys_h: T.handle, values_h: T.handle, past: T.int64, out_h: T.handle):
        T.func_attr({"tirx.noalias": True, KERNEL_ATTR: KIND, LAYER_ATTR: layer, "tirx.is_scheduled": True,
                     "op_pattern": OPAQUE})
        q = T.match_buffer(q_h, rq, "float32")
        k = T.match_buffer(k_h, rk, "float32")
        v = T.match_buffer(v_h, rv, "float32")
        cos = T.match_buffer(cos_h, (1, 1, 1, dim), "float32")
        sin = T.match_buffer(sin_h, (1, 1, 1, dim), "float32")
        keys = T.match_buffer(keys_h, cache_shape, stored)
        values = T.match_buffer(values_h, cache_shape, stored)
        out = T.match_buffer(out_h, (heads, 1, dim), "float32")
        with T.sblock("rotary_kv_write"):
            for h, d in T.grid(i64(heads), i64(half)):
                out[h, 0, d] = _rotated(q, i64(oq) + h * i64(dim), d, half, cos, sin, False)
                out[h, 0, d + i64(half)] = _rotated(q, i64(oq) + h * i64(dim), d, half, cos, sin, True)
            for h, d in T.grid(i64(kv_heads), i64(half)):
                keys[i64(layer), 0, h, past, d] = _cast(
                    stored, _rotated(k, i64(ok) + h * i64(dim), d, half, cos, sin, False))
                keys[i64(layer), 0, h, past, d + i64(half)] = _cast(
                    stored, _rotated(k, i64(ok) + h * i64(dim), d, half, cos, sin, True))
            for h, d in T.grid(i64(kv_heads), i64(dim)):
                values[i64(layer), 0, h, past, d] = _cast(stored, _at(v, i64(ov) + h * i64(dim) + d))

    return rotary_kv_write


def _int8_func(shape: RotaryShape) -> tirx.PrimFunc:
    """The int8 cache's kernel: the rotated key row is built in a row buffer, then quantized as the value row is."""
    i64 = T.int64
    layer, heads, kv_heads, dim, half = shape.layer, shape.heads, shape.kv_heads, shape.dim, shape.dim // 2
    (rq, rk, rv), (oq, ok, ov) = shape.rows, shape.offsets
    cache_shape = (shape.layers, 1, kv_heads, shape.slots, dim)

    @T.prim_func(private=True, s_tir=True)
    def rotary_kv_write_int8(q_h: T.handle, k_h: T.handle, v_h: T.handle, cos_h: T.handle, sin_h: T.handle,
                             keys_h: T.handle, values_h: T.handle, key_scales_h: T.handle, value_scales_h: T.handle,
                             past: T.int64, out_h: T.handle):
        T.func_attr({"tirx.noalias": True, KERNEL_ATTR: KIND, LAYER_ATTR: layer, "tirx.is_scheduled": True,
                     "op_pattern": OPAQUE})
        q = T.match_buffer(q_h, rq, "float32")
        k = T.match_buffer(k_h, rk, "float32")
        v = T.match_buffer(v_h, rv, "float32")
        cos = T.match_buffer(cos_h, (1, 1, 1, dim), "float32")
        sin = T.match_buffer(sin_h, (1, 1, 1, dim), "float32")
        keys = T.match_buffer(keys_h, cache_shape, "int8")
        values = T.match_buffer(values_h, cache_shape, "int8")
        key_scales = T.match_buffer(key_scales_h, cache_shape[:4], "float32")
        value_scales = T.match_buffer(value_scales_h, cache_shape[:4], "float32")
        out = T.match_buffer(out_h, (heads, 1, dim), "float32")
        with T.sblock("rotary_kv_write_int8"):
            row = T.sblock_alloc_buffer((i64(dim),), "float32", scope=STACK_SCOPE)   # a rotated key row
            big = T.sblock_alloc_buffer((i64(2),), "float32", scope=STACK_SCOPE)    # max|x|, the divisor
            for h, d in T.grid(i64(heads), i64(half)):
                out[h, 0, d] = _rotated(q, i64(oq) + h * i64(dim), d, half, cos, sin, False)
                out[h, 0, d + i64(half)] = _rotated(q, i64(oq) + h * i64(dim), d, half, cos, sin, True)
            for h in T.serial(i64(kv_heads)):
                for d in T.serial(i64(half)):
                    row[d] = _rotated(k, i64(ok) + h * i64(dim), d, half, cos, sin, False)
                    row[d + i64(half)] = _rotated(k, i64(ok) + h * i64(dim), d, half, cos, sin, True)
                write_int8_row(keys, key_scales, i64(layer), h, past, lambda d: row[d], dim, big)
            for h in T.serial(i64(kv_heads)):
                write_int8_row(values, value_scales, i64(layer), h, past,
                               lambda d: _at(v, i64(ov) + h * i64(dim) + d), dim, big)

    return rotary_kv_write_int8
