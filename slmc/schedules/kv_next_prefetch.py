"""Relax rewrite: the decode step prefetches the next layer's KV cache lines while a weight GEMV streams.

In ``resident_step`` (``slmc.graph.kv_cache.RESIDENT_STEP``, the one-token decode step) the weights
streamed between two layers' attention (SmolLM-135M int4: ~2.5 MB per layer, ~76 MB per step, more than
the last-level cache) evict the KV cache, so each layer's ``flash_attention`` (``slmc.schedules.flash_attention``)
reads its keys and values from DRAM with few misses in flight: ~13-17 us per layer at 128 keys against
~4 us from cache (docs/dev-notes.md, "Session 13: decode attention at short contexts"). This pass inserts,
``LINEARS_AHEAD`` weight-streaming linears before layer ``l + 1``'s attention, a small kernel
``kv_prefetch`` that issues one ``llvm.prefetch`` (``slmc.schedules.prefetch``) per cache line of layer
``l + 1``'s first keys and values (every KV head; an int8 cache's row scales too), at most
``PREFETCH_BYTES`` in all, the same bound as the attention kernel's own up-front prefetch: the misses
then overlap the GEMVs' weight stream instead of stalling the attention (the software-prefetch idea of
Mowry, Lam, Gupta, "Design and Evaluation of a Compiler Algorithm for Prefetching", ASPLOS 1992, issued a
kernel ahead).

The kernel is ``call_tir_inplace`` on the key cache (it writes nothing and returns the cache it was given),
so later readers of the cache depend on it and it stays in place (a pure call whose result nobody reads
would be dead code). Exact by construction: a prefetch changes no value. Only ``resident_step``: the
prefill functions (``main``, ``resident_all``, ``resident_last``) read many tokens' weights per byte of
cache and are left as they are. Layer 0 (no earlier linear of the step) and a layer without a following
one get nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tvm
from tvm import relax, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator
from tvm.script import tirx as T

from slmc.graph.kv_cache import RESIDENT_STEP
from slmc.schedules.flash_attention import KIND as ATTENTION, OPAQUE, PREFETCH_BYTES
from slmc.schedules.int4_int8_matmul import KIND as W4A8
from slmc.schedules.int8_matmul import KIND as W8A8
from slmc.schedules.kv_append import LAYER_ATTR
from slmc.schedules.prefetch import LINE_BYTES, prefetch_call
from slmc.schedules.quantized_matmul import KIND as WEIGHT_ONLY
from slmc.schedules.resident_kv import WRITE, WRITE_INT8
from slmc.schedules.rule import KERNEL_ATTR

KIND = "kv_prefetch"
LINEARS = frozenset({W4A8, W8A8, WEIGHT_ONLY})  # kernels that stream a weight matrix per call
LINEARS_AHEAD = 2  # the prefetch of layer l + 1 goes before the 2nd-last linear ahead of its attention (l's down projection)
_CALL_TIR = tvm.ir.Op.get("relax.call_tir")
_CALL_TIR_INPLACE = tvm.ir.Op.get("relax.call_tir_inplace")


@dataclass
class NextPrefetch:
    """What the pass did: the layers whose cache lines an earlier kernel prefetches (for the lowering notes)."""

    layers: list[int] = field(default_factory=list)
    bytes_per_layer: int = 0

    def notes(self) -> list[str]:
        if not self.layers:
            return []
        return [f"decode step: layers {self.layers[0]}-{self.layers[-1]}'s first {self.bytes_per_layer} bytes of KV "
                f"cache prefetched {LINEARS_AHEAD} linears ahead (kv_prefetch)"]


def prefetch_keys(kv_heads: int, depth: int, dtype: str) -> int:
    """Keys per KV head whose key and value rows (and int8 row scales) fit ``PREFETCH_BYTES`` in all."""
    row = depth * tvm.DataType(dtype).bits // 8 + (4 if dtype == "int8" else 0)
    return max(1, PREFETCH_BYTES // (kv_heads * 2 * row))


def kv_prefetch_func(layers: int, kv_heads: int, slots: int, depth: int, dtype: str, layer: int) -> tirx.PrimFunc:
    """``prefetch(cache[layer, 0, h, 0:n, :])`` for keys and values, every head ``h``, ``n = min(past + 1,
    prefetch_keys(...))`` (the keys attention reads after this step's write), one ``llvm.prefetch`` per cache
    line; an int8 cache's scales ``[layers, 1, kv_heads, slots]`` too. Arguments: the key cache (returned
    unchanged: ``call_tir_inplace`` index 0), the value cache, the scales if int8, the past length."""
    shape = (layers, 1, kv_heads, slots, depth)
    per_line = LINE_BYTES * 8 // tvm.DataType(dtype).bits  # numbers per cache line
    cap = prefetch_keys(kv_heads, depth, dtype)
    i64 = T.int64

    @T.macro
    def rows(buf, kv, keys):  # noqa: ANN001, ANN202 (TVMScript macro)
        # a head's rows are contiguous: line l holds numbers l * per_line ... of the [keys, depth] block
        for line in T.serial((keys * i64(depth) + i64(per_line - 1)) // i64(per_line)):
            T.evaluate(prefetch_call(buf[i64(layer), i64(0), kv, line * i64(per_line) // i64(depth),
                                         line * i64(per_line) % i64(depth)]))

    if dtype != "int8":
        @T.prim_func(private=True, s_tir=True)
        def kv_prefetch(kc: T.handle, vc: T.handle, past: T.int64):
            T.func_attr({"tirx.noalias": True, KERNEL_ATTR: KIND, LAYER_ATTR: layer, "tirx.is_scheduled": True,
                         "op_pattern": OPAQUE})
            keys_buf = T.match_buffer(kc, shape, dtype)
            values_buf = T.match_buffer(vc, shape, dtype)
            for kv in T.serial(i64(kv_heads)):
                keys: T.let[T.int64] = T.min(past + i64(1), i64(cap))
                rows(keys_buf, kv, keys)
                rows(values_buf, kv, keys)

        return kv_prefetch

    scale_line = LINE_BYTES // 4

    @T.prim_func(private=True, s_tir=True)
    def kv_prefetch_int8(kc: T.handle, vc: T.handle, ks: T.handle, vs: T.handle, past: T.int64):
        T.func_attr({"tirx.noalias": True, KERNEL_ATTR: KIND, LAYER_ATTR: layer, "tirx.is_scheduled": True,
                         "op_pattern": OPAQUE})
        keys_buf = T.match_buffer(kc, shape, "int8")
        values_buf = T.match_buffer(vc, shape, "int8")
        key_scales = T.match_buffer(ks, shape[:4], "float32")
        value_scales = T.match_buffer(vs, shape[:4], "float32")
        for kv in T.serial(i64(kv_heads)):
            keys: T.let[T.int64] = T.min(past + i64(1), i64(cap))
            rows(keys_buf, kv, keys)
            rows(values_buf, kv, keys)
            for line in T.serial((keys + i64(scale_line - 1)) // i64(scale_line)):
                T.evaluate(prefetch_call(key_scales[i64(layer), i64(0), kv, line * i64(scale_line)]))
                T.evaluate(prefetch_call(value_scales[i64(layer), i64(0), kv, line * i64(scale_line)]))

    return kv_prefetch_int8


def _kernel(mod: tvm.IRModule, value: relax.Expr) -> tuple[str | None, tirx.PrimFunc | None]:
    """The ``slmc.kernel`` kind and PrimFunc of a ``call_tir`` / ``call_tir_inplace``, else ``(None, None)``."""
    if isinstance(value, relax.Call) and (value.op.same_as(_CALL_TIR) or value.op.same_as(_CALL_TIR_INPLACE)):
        func = mod[value.args[0]]
        if isinstance(func, tirx.PrimFunc) and func.attrs is not None and KERNEL_ATTR in func.attrs:
            return str(func.attrs[KERNEL_ATTR]), func
    return None, None


def _places(mod: tvm.IRModule, bindings: list[relax.Binding]) -> dict[relax.Var, tuple[int, relax.Call]]:
    """For each layer ``m >= 1`` with ``LINEARS_AHEAD`` linears between layer ``m - 1``'s attention and its own:
    the binding (its variable) the prefetch goes before, with ``m`` and layer ``m - 1``'s attention call (whose
    cache operands are live there)."""
    places: dict[relax.Var, tuple[int, relax.Call]] = {}
    previous: relax.Call | None = None
    linears: list[relax.Var] = []
    for binding in bindings:
        kind, func = _kernel(mod, binding.value)
        if kind in LINEARS:
            linears.append(binding.var)
        elif kind == ATTENTION:
            layer = int(func.attrs[LAYER_ATTR])
            if previous is not None and len(linears) >= LINEARS_AHEAD:
                places[linears[-LINEARS_AHEAD]] = (layer, previous)
            previous, linears = binding.value, []
    return places


@mutator
class _Prefetch(PyExprMutator):
    """Emits ``kv_prefetch`` calls before the bindings of ``places`` (``_places``) and threads the key cache
    through them."""

    def __init__(self, mod: tvm.IRModule, places: dict[relax.Var, tuple[int, relax.Call]], past: relax.Expr,
                 record: NextPrefetch):
        super().__init__(mod)
        self.places, self.past, self.record = places, past, record

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:  # noqa: N802 (TVM's visitor name)
        if binding.var in self.places:
            layer, attention = self.places[binding.var]
            _query, keys, values, *rest = attention.args[1].fields
            scales = [o for o in rest if isinstance(o.ty, relax.TensorType) and o.ty.ndim == 4]
            layers, _, kv_heads, slots, depth = (int(d) for d in keys.ty.shape.values)
            dtype = str(keys.ty.dtype)
            func = kv_prefetch_func(layers, kv_heads, slots, depth, dtype, layer)
            gvar = self.builder_.add_func(func, KIND)
            current = self.visit_expr(keys)
            fetched = self.builder_.emit(relax.op.call_tir_inplace(
                gvar, relax.Tuple([current, self.visit_expr(values), *(self.visit_expr(s) for s in scales[:2]),
                                   self.past]), 0, current.ty))
            self.set_var_remap(keys, fetched)
            self.record.layers.append(layer)
            self.record.bytes_per_layer = prefetch_keys(kv_heads, depth, dtype) * kv_heads * 2 * (
                depth * tvm.DataType(dtype).bits // 8 + (4 if dtype == "int8" else 0))
        super().visit_var_binding_(binding)


def _past(mod: tvm.IRModule, bindings: list[relax.Binding]) -> relax.Expr | None:
    """The past length the step's cache writes are given (their last argument)."""
    for binding in bindings:
        kind, _ = _kernel(mod, binding.value)
        if kind in (WRITE, WRITE_INT8):
            return binding.value.args[1].fields[-1]
    return None


def kv_next_prefetch(notes: list[str] | None = None, record: NextPrefetch | None = None) -> tvm.transform.Pass:
    """The module pass (see the module docstring), on ``resident_step`` only; what it did is appended to
    ``notes`` (the lowering notes) and kept in ``record``. A module without the step is returned as it is."""
    record = record if record is not None else NextPrefetch()

    @tvm.transform.module_pass(opt_level=0, name="slmc_kv_next_prefetch")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        step = next((gvar for gvar in mod.get_global_vars() if gvar.name_hint == RESIDENT_STEP), None)
        if step is None:
            return mod
        func = mod[step]
        bindings = [b for block in func.body.blocks for b in block.bindings]
        places, past = _places(mod, bindings), _past(mod, bindings)
        if not places or past is None:
            return mod
        rewriter = _Prefetch(mod, places, past, record)
        rewriter.builder_.update_func(step, rewriter.visit_expr(func))
        if notes is not None:
            notes.extend(record.notes())
        return rewriter.builder_.get()

    return _pass
