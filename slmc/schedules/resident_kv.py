"""Relax rewrite: the KV cache lives in place, and a step appends to it instead of returning a new one.

Under the copy contract (``slmc.graph.kv_cache``) every step takes the whole cache in and returns a
whole new one: O(context) copies and a new allocation shape per token. After ``kv_append`` (each
layer's ``concat(past[layer], new)`` is one ``kv_append`` kernel) and ``attention_rewrite`` (the
score and value kernels read ``K`` / ``V`` ``[1, H_kv, N, D]`` as they are), this pass adds the
function ``resident_all`` (``slmc.graph.kv_cache.RESIDENT_ALL``) beside ``main``::

    resident_all(input_ids [1, T], cache_keys [L, 1, H_kv, M, D], cache_values, past: Shape([P]), *weights)
        -> logits [1, T, V]

``M = max_context + 1`` (the sink slot 0 included) is static. Per layer, ``kv_write`` writes the
new keys (values) into ``cache[layer, 0, :, P:P+T, :]`` in place (``R.call_tir_inplace``), and the
attention kernels read ``cache[layer, 0, h // g, n, :]`` for ``n < P + T`` straight from the
resident buffer; the stacked ``keys``/``values`` outputs are gone. Why it is exact: ``kv_append``'s
output ``[1, H_kv, P + T, D]`` is element for element ``cache[layer, 0, :, :P + T, :]`` after the
write (the first ``P`` slots hold what the caller cached, the next ``T`` the new tokens), and the
attention kernels compute the same sums of the same products over it.

A cache stored in int8 (``KVCacheSpec.dtype``, the recipe's ``kv_cache``) adds the scales
``[L, 1, H_kv, M]`` float32 (one per layer, head and slot)::

    resident_all(input_ids [1, T], cache_keys int8 [L, 1, H_kv, M, D], cache_values int8, key_scales [L, 1, H_kv, M],
                 value_scales, past: Shape([P]), *weights) -> logits [1, T, V]

``kv_write_int8`` quantizes each new row (symmetric, ``scale = max|x| / 127``, ``q = round(x / scale)``,
``slmc.graph.kv_cache.quantize_rows``) as it writes it, and the score and value kernels read
``q * scale``: attention runs over the dequantized cache, new tokens included (Liu et al., "KIVI",
arXiv:2402.02750, for per-token quantization of the cache; here keys too are per token, as llama.cpp's
q8_0 cache is). The cache then takes ``D + 4`` bytes per row instead of ``4 D``.

A cache stored in float16 keeps that signature with float16 caches: ``kv_write`` rounds each new float32
number to the nearest float16 and the attention kernels widen what they read back to float32 (2 bytes per
number instead of 4: llama.cpp's default cache type).

Preconditions checked (else no ``resident_all``, and the reason is recorded): ``main`` takes
``(input_ids, past_keys, past_values)`` of the cache's shape; every read of a past cache is a
``kv_append`` (with its layer, ``slmc.kv_layer``); every read of an append is an attention kernel,
or the stacked output; a layer's cache is read before the next layer writes it. A kind without
``attention_rewrite`` (GPU) keeps the copy contract: its attention reads the append through
``repeat_kv`` copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tvm
from tvm import relax, te, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator
from tvm.relax.utils import copy_with_new_vars
from tvm.script import tirx as T

from slmc.graph.kv_cache import INT8_LEVELS, RESIDENT_ALL, RESIDENT_LAST, RESIDENT_STEP, KVCacheSpec
from slmc.schedules.attention_rewrite import SCORES, VALUES
from slmc.schedules.kv_append import KIND as APPEND, LAYER_ATTR
from slmc.schedules.last_position import last_position_function
from slmc.schedules.not_resident import NotResident
from slmc.schedules.one_token import one_token_module
from slmc.schedules.relax_patterns import called_kernel
from slmc.schedules.row_matmul import STACK_SCOPE
from slmc.schedules.rule import KERNEL_ATTR

WRITE = "kv_write"
WRITE_INT8 = "kv_write_int8"
_CALL_TIR = tvm.ir.Op.get("relax.call_tir")


@dataclass
class Residency:
    """What the pass is asked (the artifact's cache) and what it did: ``mode`` ``resident`` (``resident_all``
    added, ``layers`` rewritten) or ``copy`` with the ``reason``."""

    cache: KVCacheSpec
    mode: str = "copy"
    reason: str = "the resident-cache rewrite did not run"
    layers: int = 0
    last_position: str | None = None  # why resident_last is missing (None: built, or not resident at all)
    # also build resident_step (slmc.schedules.one_token), the decode step on static shapes, with its own
    # one-token copies of slmc's kernels (once off: sharing them with resident_last broke FuseTIR on OPT)
    one_token: bool = True

    def notes(self) -> list[str]:
        """The outcome, for the manifest's lowering notes."""
        if self.mode != "resident":
            return [f"KV cache: copy contract ({self.reason})"]
        step = f", {RESIDENT_STEP} a one-token step" if self.one_token else ""
        last = (f"; no {RESIDENT_LAST}: {self.last_position}" if self.last_position
                else f", {RESIDENT_LAST} computes the last token's logits only{step}")
        scaled = " with a float32 scale per (layer, head, position)" if self.cache.quantized else ""
        stored = f", stored in {self.cache.dtype}{scaled}" if self.cache.narrowed else ""
        return [f"KV cache: resident{stored}, appended in place in {self.layers} layers ({RESIDENT_ALL}){last}"]


def kv_write_func(cache: KVCacheSpec, layer: int, dtype: str, stored: str | None = None) -> tirx.PrimFunc:
    """``cache[layer, 0, h, past + t, d] = new[0, h, t, d]``, in place (the cache is the first argument);
    ``new`` is ``dtype``, the cache ``stored`` (default ``dtype``; float16 of float32: rounded to nearest)."""
    stored = stored or dtype
    shape = (cache.layers, 1, cache.kv_heads, cache.max_context + 1, cache.head_dim)
    heads, dim = cache.kv_heads, cache.head_dim

    @T.prim_func(private=True, s_tir=True)
    def kv_write(stacked: T.handle, new: T.handle, past: T.int64):
        T.func_attr({"tirx.noalias": True, KERNEL_ATTR: WRITE, LAYER_ATTR: layer})
        tokens = T.int64()
        cache_buf = T.match_buffer(stacked, shape, stored)
        new_buf = T.match_buffer(new, (1, heads, tokens, dim), dtype)
        for h, t, d in T.grid(T.int64(heads), tokens, T.int64(dim)):
            with T.sblock("kv_write"):
                vh, vt, vd = T.axis.remap("SSS", [h, t, d])
                cache_buf[T.int64(layer), T.int64(0), vh, past + vt, vd] = _as(stored, dtype, new_buf[T.int64(0), vh, vt, vd])

    return kv_write


@T.macro
def write_int8_row(cache_buf, scale_buf, layer, h, slot, x, dim, big):
    """Row ``x(d)``, ``d < dim`` (a function of the index), quantized into ``cache_buf[layer, 0, h, slot, :]`` with its
    scale ``max|x| / 127`` in ``scale_buf[layer, 0, h, slot]`` (a row of zeros: scale 0, codes 0); ``big`` is a
    2-element float32 scratch (max|x|, the divisor). Shared by every int8 cache write (``kv_write_int8`` here,
    ``slmc.schedules.rotary_kv``), so all store the same numbers."""
    big[0] = T.float32(0)
    for d in T.serial(T.int64(dim)):
        big[0] = T.max(big[0], T.fabs(x(d)))
    scale_buf[layer, T.int64(0), h, slot] = big[0] / T.float32(INT8_LEVELS)
    big[1] = T.if_then_else(big[0] > T.float32(0), big[0] / T.float32(INT8_LEVELS), T.float32(1))
    for d in T.serial(T.int64(dim)):
        cache_buf[layer, T.int64(0), h, slot, d] = T.Cast("int8", T.round(x(d) / big[1]))


def kv_write_int8_func(cache: KVCacheSpec, layer: int) -> tirx.PrimFunc:
    """Quantize and write, in place (the cache and its scales are the first two arguments): per new row
    ``x = new[0, h, t, :]``, ``scales[layer, 0, h, past + t] = max|x| / 127`` and
    ``cache[layer, 0, h, past + t, :] = round(x / scale)`` (a row of zeros: scale 0, q 0)."""
    slots = cache.max_context + 1
    shape = (cache.layers, 1, cache.kv_heads, slots, cache.head_dim)
    heads, dim = cache.kv_heads, cache.head_dim
    i64 = T.int64

    @T.prim_func(private=True, s_tir=True)
    def kv_write_int8(stacked: T.handle, scales: T.handle, new: T.handle, past: T.int64):
        T.func_attr({"tirx.noalias": True, KERNEL_ATTR: WRITE_INT8, LAYER_ATTR: layer, "tirx.is_scheduled": True})
        tokens = T.int64()
        cache_buf = T.match_buffer(stacked, shape, "int8")
        scale_buf = T.match_buffer(scales, shape[:4], "float32")
        new_buf = T.match_buffer(new, (1, heads, tokens, dim), "float32")
        for row in T.serial(i64(heads) * tokens):
            with T.sblock("kv_write_int8"):
                big = T.sblock_alloc_buffer((i64(2),), "float32", scope=STACK_SCOPE)  # max|x|, the divisor
                h: T.let[T.int64] = row // tokens
                t: T.let[T.int64] = row % tokens
                write_int8_row(cache_buf, scale_buf, i64(layer), h, past + t,
                               lambda d: new_buf[i64(0), h, t, d], dim, big)

    return kv_write_int8


def _as(dtype: str, given: str, value: Any) -> Any:
    """``value`` (of dtype ``given``) converted to ``dtype``, or itself when ``given`` is ``dtype``."""
    return value if given == dtype else T.Cast(dtype, value)


def _stored(cache: te.Tensor, scales: te.Tensor | None, layer: int, head: Any, n: Any, d: Any) -> Any:
    """One cached number as attention reads it: the float32 cache's, a float16 cache's widened, or ``q * scale``
    of an int8 cache."""
    if scales is None:
        value = cache[layer, 0, head, n, d]
        return value if cache.dtype == "float32" else value.astype("float32")
    return cache[layer, 0, head, n, d].astype("float32") * scales[layer, 0, head, n]


def resident_scores_te(query: te.Tensor, cache: te.Tensor, layer: int, group: int, keys: Any,
                       scales: te.Tensor | None = None) -> te.Tensor:
    """``attention_scores`` reading key head ``h // group`` of ``layer`` from the stacked cache, ``keys`` positions
    (``scales``: the int8 cache's, dequantized as it is read)."""
    heads, rows, depth = query.shape
    d = te.reduce_axis((0, depth), name="d")
    return te.compute((heads, rows, keys),
                      lambda h, m, n: te.sum(query[h, m, d] * _stored(cache, scales, layer, h // group, n, d), axis=d),
                      name="attention_scores")


def resident_values_te(probs: te.Tensor, cache: te.Tensor, layer: int, group: int,
                       scales: te.Tensor | None = None) -> te.Tensor:
    """``attention_values`` reading value head ``h // group`` of ``layer`` from the stacked cache."""
    heads, rows, length = probs.shape
    n = te.reduce_axis((0, length), name="n")
    return te.compute((heads, rows, cache.shape[4]),
                      lambda h, m, d: te.sum(probs[h, m, n] * _stored(cache, scales, layer, h // group, n, d), axis=n),
                      name="attention_values")


def _describe(value: relax.Expr) -> str:
    if isinstance(value, relax.Call):
        op = value.op
        if op.same_as(_CALL_TIR):
            return f"R.call_tir({value.args[0].name_hint})"
        return getattr(op, "name", type(op).__name__)
    return type(value).__name__


@mutator
class _Resident(PyExprMutator):
    """Rewrites the bindings of ``main`` (with both caches as extra parameters) into the resident step."""

    def __init__(self, mod: tvm.IRModule, caches: dict[relax.Var, relax.Var], past: tirx.Var, cache: KVCacheSpec,
                 output: relax.Var, scales: dict[relax.Var, relax.Var] | None = None):
        super().__init__(mod)
        self.mod, self.past, self.cache, self.output = mod, past, cache, output
        self.current = dict(caches)                      # past param -> cache var after the latest write
        self.scales = dict(scales or {})                 # past param -> its scales after the latest write (int8)
        self.writes = {param: 0 for param in caches}     # past param -> writes so far
        # append var -> (param, layer, write no., cache, scales or None)
        self.appends: dict[relax.Var, tuple[relax.Var, int, int, relax.Var, relax.Var | None]] = {}
        self.layers: set[int] = set()

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:  # noqa: N802 (TVM's visitor name)
        value = binding.value
        kind, func = called_kernel(self.mod, value)
        if binding.var.same_as(self.output) and isinstance(value, relax.Tuple):
            logits = self.visit_expr(value.fields[0])   # the stacked keys/values outputs become dead code
            out = relax.Var(binding.var.name, logits.ty)
            self.builder_.emit_normalized(relax.VarBinding(out, logits))
            self.set_var_remap(binding.var, out)
            return
        super().visit_var_binding_(binding)
        if kind != APPEND or not any(value.args[1].fields[0].same_as(p) for p in self.current):
            return
        param = next(p for p in self.current if value.args[1].fields[0].same_as(p))
        layer = int(func.attrs[LAYER_ATTR])
        new = self.visit_expr(value.args[1].fields[1])
        if param in self.scales:
            if str(new.ty.dtype) != "float32":
                raise NotResident(f"layer {layer}'s new keys/values are {new.ty.dtype}; an int8 cache quantizes float32")
            gvar = self.builder_.add_func(kv_write_int8_func(self.cache, layer), WRITE_INT8)
            both = self.builder_.emit(relax.op.call_tir_inplace(
                gvar, relax.Tuple([self.current[param], self.scales[param], new, self.past]), [0, 1],
                [self.current[param].ty, self.scales[param].ty]))
            written = self.builder_.emit(relax.TupleGetItem(both, 0))
            self.scales[param] = self.builder_.emit(relax.TupleGetItem(both, 1))
        else:
            if self.cache.narrowed and str(new.ty.dtype) != "float32":
                raise NotResident(f"layer {layer}'s new keys/values are {new.ty.dtype}; a {self.cache.dtype} cache "
                                  "rounds float32 ones")
            stored = self.cache.dtype if self.cache.narrowed else str(new.ty.dtype)
            gvar = self.builder_.add_func(kv_write_func(self.cache, layer, str(new.ty.dtype), stored), WRITE)
            written = self.builder_.emit(relax.op.call_tir_inplace(
                gvar, relax.Tuple([self.current[param], new, self.past]), 0, self.current[param].ty))
        self.current[param] = written
        self.writes[param] += 1
        self.appends[binding.var] = (param, layer, self.writes[param], written, self.scales.get(param))
        self.layers.add(layer)

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802 (TVM's visitor name)
        kind, _ = called_kernel(self.mod, call)
        operands = call.args[1].fields if kind in (SCORES, VALUES) else ()
        if len(operands) < 2 or not isinstance(operands[1], relax.Var) or operands[1] not in self.appends:
            return super().visit_call_(call)
        param, layer, write, cache, scales = self.appends[operands[1]]
        if write != self.writes[param]:
            raise NotResident(f"layer {layer}'s cache is read after a later layer wrote the cache")
        query = self.visit_expr(operands[0])
        heads = query.ty.shape.values[0]
        if not isinstance(heads, tirx.IntImm) or int(heads) % self.cache.kv_heads:
            raise NotResident(f"layer {layer}'s attention has {heads} heads for {self.cache.kv_heads} KV heads")
        group = int(heads) // self.cache.kv_heads
        if kind == SCORES:
            keys = call.ty.shape.values[2]
            return self.builder_.call_te(resident_scores_te, query, cache, layer, group, keys, scales,
                                         primfunc_name_hint=SCORES, primfunc_attrs={KERNEL_ATTR: SCORES, LAYER_ATTR: layer})
        return self.builder_.call_te(resident_values_te, query, cache, layer, group, scales,
                                     primfunc_name_hint=VALUES, primfunc_attrs={KERNEL_ATTR: VALUES, LAYER_ATTR: layer})


def _past_params(main: relax.Function, cache: KVCacheSpec) -> tuple[relax.Var, relax.Var]:
    if "num_input" not in main.attrs or int(main.attrs["num_input"]) != 3:
        raise NotResident("main does not take (input_ids, past_keys, past_values)")
    keys, values = main.params[1], main.params[2]
    expected = [cache.layers, 1, cache.kv_heads, None, cache.head_dim]
    for param in (keys, values):
        shape = getattr(param.ty, "shape", None)
        dims = list(shape.values) if isinstance(shape, relax.ShapeExpr) else []
        if len(dims) != 5 or not isinstance(dims[3], tirx.Var) or any(
                want is not None and (not isinstance(got, tirx.IntImm) or int(got) != want) for got, want in zip(dims, expected)):
            raise NotResident(f"main's parameter '{param.name}' is not a cache [L, 1, H_kv, P, D] = {expected}")
    return keys, values


def resident_function(mod: tvm.IRModule, cache: KVCacheSpec) -> tuple[tvm.IRModule, int]:
    """``mod`` with ``resident_all`` added (see the module docstring) and the number of layers rewritten;
    ``NotResident`` says why not."""
    main = mod["main"]
    keys, values = _past_params(main, cache)
    past = keys.ty.shape.values[3]
    value_past = values.ty.shape.values[3]
    if not value_past.same_as(past):
        main = main.bind_symbolic_vars({value_past: past})
        keys, values = main.params[1], main.params[2]
    slots = cache.max_context + 1
    dtype = cache.dtype if cache.narrowed else str(keys.ty.dtype)
    if cache.narrowed and str(keys.ty.dtype) != "float32":
        raise NotResident(f"a {cache.dtype} cache stores a float32 one; main's cache is {keys.ty.dtype}")
    rows = [cache.layers, 1, cache.kv_heads, slots]
    cache_keys = relax.Var("cache_keys", relax.TensorType([*rows, cache.head_dim], dtype))
    cache_values = relax.Var("cache_values", relax.TensorType([*rows, cache.head_dim], dtype))
    scales = ([relax.Var("key_scales", relax.TensorType(rows, "float32")),
               relax.Var("value_scales", relax.TensorType(rows, "float32"))] if cache.quantized else [])
    past_shape = relax.Var("past", relax.ShapeType([past]))
    if not isinstance(main.body, relax.SeqExpr) or not isinstance(main.body.body, relax.Var):
        raise NotResident("main's body does not end in a bound output")
    rewriter = _Resident(mod, {keys: cache_keys, values: cache_values}, past, cache, main.body.body,
                         dict(zip((keys, values), scales)))
    weights = list(main.params[3:])
    staged = relax.Function([main.params[0], keys, values, cache_keys, cache_values, *scales, past_shape, *weights],
                            main.body, None, main.is_pure, main.attrs)
    rewritten = relax.analysis.remove_all_unused(rewriter.visit_expr(staged))
    still = [p.name for p in (keys, values) if p in set(relax.analysis.free_vars(rewritten.body))]
    if still:
        users = _users(rewritten, [p for p in (keys, values) if p.name in still])
        raise NotResident(f"{' and '.join(still)} {'are' if len(still) > 1 else 'is'} still read by {users} "
                          "(not an append that attention alone reads)")
    if len(rewriter.layers) != cache.layers:
        raise NotResident(f"the cache append was found in {len(rewriter.layers)} of {cache.layers} layers")
    params = [rewritten.params[0], *rewritten.params[3:]]
    attrs = {**dict(main.attrs), "num_input": 4 + len(scales), "global_symbol": RESIDENT_ALL}
    # its own variables: a variable bound in two functions breaks FuseOps
    function = copy_with_new_vars(relax.Function(params, rewritten.body, rewritten.body.ty, main.is_pure).with_attrs(attrs))
    out = rewriter.builder_.get()
    out[RESIDENT_ALL] = function
    return out, len(rewriter.layers)


def with_last_position(mod: tvm.IRModule, one_token: bool = True) -> tvm.IRModule:
    """``mod`` with ``resident_last`` added (``slmc.schedules.last_position``) and, with ``one_token``, its
    one-token form ``resident_step`` (``slmc.schedules.one_token``); ``NotResident`` says why not."""
    out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    function = last_position_function(mod[RESIDENT_ALL], mod)
    out[RESIDENT_LAST] = copy_with_new_vars(function.with_attr("global_symbol", RESIDENT_LAST))
    if one_token:
        out, step = one_token_module(out, function)
        out[RESIDENT_STEP] = copy_with_new_vars(step.with_attr("global_symbol", RESIDENT_STEP))
    return out


def _users(func: relax.Function, params: list[relax.Var]) -> str:
    """The ops that still read ``params`` (for the reason in the manifest)."""
    found: list[str] = []

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and any(isinstance(a, relax.Var) and a in params for a in _flat_args(expr)):
            found.append(_describe(expr))

    relax.analysis.post_order_visit(func.body, visit)
    return ", ".join(sorted(set(found))) or "the function's output"


def _flat_args(call: relax.Call) -> list[relax.Expr]:
    out: list[relax.Expr] = []
    for arg in call.args:
        out.extend(arg.fields if isinstance(arg, relax.Tuple) else [arg])
    return out


def resident_kv(residency: Residency) -> tvm.transform.Pass:
    """The module pass: add ``resident_all`` when the pattern holds, and record the outcome in ``residency``."""

    @tvm.transform.module_pass(opt_level=0, name="slmc_resident_kv")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        try:
            out, layers = resident_function(mod, residency.cache)
        except NotResident as exc:
            residency.mode, residency.reason, residency.layers = "copy", str(exc), 0
            return mod
        residency.mode, residency.reason, residency.layers = "resident", "", layers
        try:
            return with_last_position(out, residency.one_token)
        except NotResident as exc:
            residency.last_position = str(exc)
            return out

    return _pass
