"""Relax rewrite: each layer's attention on the resident KV cache becomes one tiled kernel (``slmc.schedules.flash_attention``).

After ``slmc.schedules.resident_kv`` a layer's attention in ``resident_all`` / ``resident_last`` reads::

    s = call_tir(attention_scores, (Q [H, T, D], cache_keys [L, 1, H_kv, S, D]))   # [H, T, N]
    p = softmax(reshape(s) * scale + mask, axis=-1)                                # mask [T, N] or [1, 1, T, N]
    o = call_tir(attention_values, (reshape(p) [H, T, N], cache_values))           # [H, T, D]

(``reshape`` / identity ``broadcast_to`` / ``astype`` to the same float32 anywhere in the chain; the
scale a scalar constant multiplied or divided; the scale may be absent). This pass replaces ``o`` by
``call_tir(flash_attention, (Q, cache_keys, cache_values, mask))`` (an int8 cache: ``(Q, cache_keys,
cache_values, key_scales, value_scales, mask)``, the scales the score and value kernels read): the same function of the same
operands (``slmc.schedules.flash_attention`` computes it without the ``[H, T, N]`` intermediates). The
score and value kernels must read the same layer (``slmc.kv_layer``) of two caches of one shape. A
chain that differs in any way is left as it is, and counted in ``FlashRewrite.declined`` with the reason.
"""

from __future__ import annotations


import numpy as np
import tvm
from tvm import relax, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator

from slmc.schedules.attention_rewrite import SCORES, VALUES
from slmc.schedules.flash_attention import KIND, FlashShape, flash_attention_func
from slmc.schedules.kv_append import LAYER_ATTR
from slmc.schedules.relax_patterns import RewriteRecord, is_op, same_shape, scalar_constant, shape_of
from slmc.schedules.rule import KERNEL_ATTR

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")
_PASS_THROUGH = ("relax.reshape", "relax.broadcast_to", "relax.astype")


class FlashRewrite(RewriteRecord):
    """What the pass did: layers rewritten per function, and why a chain was left (for the lowering notes)."""

    DONE = "attention: one tiled kernel per layer (flash_attention) in {}"
    DECLINED = "attention not tiled: {}"


def _float32(expr: relax.Expr) -> bool:
    return str(getattr(expr.ty, "dtype", "")) == "float32"


def _tensors(operands: list[relax.Expr]) -> list[relax.Expr]:
    """The tensor operands among a kernel's trailing ones (an int8 cache's scales; not its symbolic sizes)."""
    return [o for o in operands if isinstance(o.ty, relax.TensorType)]


@mutator
class _Flash(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, lanes: int, record: FlashRewrite):
        super().__init__(mod)
        self.mod, self.lanes, self.record = mod, lanes, record
        self.count = 0

    # -- walking the chain back -------------------------------------------------------------------
    def _value(self, expr: relax.Expr) -> relax.Expr:
        bound = self.lookup_binding(expr) if isinstance(expr, relax.Var) else None
        return bound if bound is not None else expr

    def _through(self, expr: relax.Expr) -> relax.Expr:
        """Skip reshapes, broadcasts and float32 -> float32 casts (element values unchanged)."""
        while True:
            value = self._value(expr)
            if not any(is_op(value, name) for name in _PASS_THROUGH) or not _float32(value.args[0]):
                return value
            if is_op(value, "relax.broadcast_to") and not same_shape(shape_of(value.args[0]), shape_of(value)):
                return value
            expr = value.args[0]

    def _kernel(self, expr: relax.Expr, kind: str) -> tuple[relax.Call, int] | None:
        """``(call, layer)`` when ``expr`` is a ``call_tir`` of a ``kind`` kernel that knows its layer."""
        if not (isinstance(expr, relax.Call) and expr.op.same_as(_CALL_TIR)):
            return None
        func = self.mod[expr.args[0]]
        attrs = func.attrs if isinstance(func, tirx.PrimFunc) else None
        if attrs is None or KERNEL_ATTR not in attrs or str(attrs[KERNEL_ATTR]) != kind or LAYER_ATTR not in attrs:
            return None
        return expr, int(attrs[LAYER_ATTR])

    def _scaled_scores(self, expr: relax.Expr) -> tuple[relax.Call, int, float] | None:
        value, scale = self._through(expr), 1.0
        if is_op(value, "relax.multiply") or is_op(value, "relax.divide"):
            left, right = value.args
            constant = scalar_constant(self._value(right), floats_only=True)
            if constant is None and is_op(value, "relax.multiply"):
                left, constant = right, scalar_constant(self._value(left), floats_only=True)
            if constant is None or constant == 0.0:
                return None
            scale = constant if is_op(value, "relax.multiply") else 1.0 / constant
            value = self._through(left)
        found = self._kernel(value, SCORES)
        return None if found is None else (*found, scale)

    def _match(self, call: relax.Call) -> tuple[relax.Expr, ...] | str | None:
        """The flash operands and shape for a values kernel call, a reason string, or ``None`` (not attention)."""
        values = self._kernel(call, VALUES)
        if values is None:
            return None
        layer = values[1]
        probs, value_cache, *rest = call.args[1].fields
        value_scales = _tensors(rest)
        softmax = self._through(probs)
        if not is_op(softmax, "relax.nn.softmax") or int(softmax.attrs.axis) not in (-1, len(shape_of(softmax) or []) - 1):
            return f"layer {layer}: the probabilities are not a softmax over the keys"
        added = self._through(softmax.args[0])
        if not is_op(added, "relax.add"):
            return f"layer {layer}: no additive mask before the softmax"
        for scores_side, mask in (added.args, added.args[::-1]):
            scores = self._scaled_scores(scores_side)
            if scores is not None:
                break
        else:
            return f"layer {layer}: the softmax's input is not the scaled score kernel plus a mask"
        scores_call, scores_layer, scale = scores
        query, key_cache, *rest = scores_call.args[1].fields
        key_scales = _tensors(rest)
        tokens, keys = (shape_of(scores_call) or [None, None, None])[1:]
        mask_dims = shape_of(mask)
        if scores_layer != layer or not same_shape(shape_of(key_cache), shape_of(value_cache)) or not _float32(mask) \
                or mask_dims is None:
            return f"layer {layer}: scores and values read different layers or caches"
        quantized = bool(key_scales)
        stored = str(key_cache.ty.dtype)
        if quantized != bool(value_scales) or stored not in (("int8",) if quantized else ("float32", "float16")) \
                or str(value_cache.ty.dtype) != stored:
            return f"layer {layer}: keys and values are not both float32, both float16, or both int8 with scales"
        expected = [[tokens, keys], [1, 1, tokens, keys]]
        if not any(same_shape(mask_dims, e) for e in expected):
            return f"layer {layer}: the mask is not [T, N] or [1, 1, T, N]"
        heads, _, depth = shape_of(query)
        layers, _, kv_heads, slots, _ = shape_of(key_cache)
        static = [heads, depth, layers, kv_heads, slots]
        if not all(isinstance(v, tirx.IntImm) for v in static) or int(heads) % int(kv_heads) or int(depth) % self.lanes:
            return f"layer {layer}: heads, head size or cache shape not static multiples of the vector width"
        shape = FlashShape(heads=int(heads), kv_heads=int(kv_heads), depth=int(depth), slots=int(slots),
                           layers=int(layers), layer=layer, scale=float(np.float32(scale)), mask_rank=len(mask_dims),
                           cache_dtype=stored)
        return shape, query, key_cache, value_cache, *key_scales, *value_scales, mask

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802 (TVM's visitor name)
        found = self._match(call)
        if found is None:
            return super().visit_call_(call)
        if isinstance(found, str):
            self.record.declined.append(found)
            return super().visit_call_(call)
        shape, *operands = found
        gvar = self.builder_.add_func(flash_attention_func(shape, self.lanes), KIND)
        self.count += 1
        return relax.op.call_tir(gvar, relax.Tuple([self.visit_expr(o) for o in operands]), call.ty)


def flash_rewrite(lanes: int, notes: list[str] | None = None, record: FlashRewrite | None = None) -> tvm.transform.Pass:
    """The module pass (see the module docstring); ``lanes`` is the target's float32 vector width. What it
    did (``FlashRewrite.notes``) is appended to ``notes`` (the lowering notes) and kept in ``record``."""
    record = record if record is not None else FlashRewrite()

    @tvm.transform.module_pass(opt_level=0, name="slmc_flash_rewrite")
    def _pass(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rewriter = _Flash(mod, lanes, record)
        total = 0
        for gvar, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                before = rewriter.count
                rewriter.builder_.update_func(gvar, relax.analysis.remove_all_unused(rewriter.visit_expr(func)))
                if rewriter.count > before:
                    record.rewritten[gvar.name_hint] = rewriter.count - before
                total += rewriter.count - before
        if notes is not None:
            notes.extend(record.notes())
        return relax.transform.DeadCodeElimination()(rewriter.builder_.get()) if total else mod

    return _pass
