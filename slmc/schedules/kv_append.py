"""Relax rewrite: appending new keys/values to one layer of a stacked KV cache reads the stack in place.

slmc's causal-LM wrapper takes the cache of every layer stacked (``past_keys[L, B, H, P, D]``) and
each layer appends its new keys with ``cat([past_keys[layer], k], dim=2)``. TVM imports that as
``concatenate((take(past_keys, const(layer), axis=0), k), axis=2)``; with a symbolic cache length
TVM classifies both kernels as opaque, so FuseOps cannot merge them, and the ``take`` copies the
layer's whole cache before the concatenation copies it again: one extra read and write of the
entire KV cache per step. This pass replaces the pair by one kernel::

    out[b, h, n, d] = past[layer, b, h, n, d]  if n < P  else  new[b, h, n - P, d]

which is the definition of that concatenation of that slice (exact: the same elements, copied
once). Anything else (another axis, a non-constant layer, a slice not along the stacking axis) is
left as it is. The kernel carries ``slmc.kernel = kv_append`` and its layer (``slmc.kv_layer``); the CPU ``Fallback`` rule
vectorizes and parallelizes it like any elementwise kernel.
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import relax, te, tirx

from slmc.schedules.rule import KERNEL_ATTR

KIND = "kv_append"
LAYER_ATTR = "slmc.kv_layer"  # the layer a kv_append kernel reads (slmc.schedules.resident_kv finds it there)
_TAKE = tvm.ir.Op.get("relax.take")
_CONCAT = tvm.ir.Op.get("relax.concat")


def kv_append_te(stacked: te.Tensor, new: te.Tensor, layer: int) -> te.Tensor:
    """``concat(stacked[layer], new)`` along axis 2 of a ``[B, H, N, D]`` layer (see the module docstring)."""
    past = stacked.shape[3]
    batch, heads, tokens, dim = new.shape

    def value(b: Any, h: Any, n: Any, d: Any) -> Any:
        return tirx.if_then_else(n < past, stacked[layer, b, h, tirx.min(n, past - 1), d],
                                 new[b, h, tirx.max(n - past, 0), d])

    return te.compute((batch, heads, past + tokens, dim), value, name="kv_append")


def _layer_slice(binding: relax.Expr | None) -> tuple[relax.Expr, int] | None:
    """``(stacked, layer)`` when ``binding`` is ``take(stacked, const(layer), axis=0)`` of a 5-D stack."""
    if not (isinstance(binding, relax.Call) and isinstance(binding.op, tvm.ir.Op) and binding.op.same_as(_TAKE)):
        return None
    stacked, index = binding.args
    axis = binding.attrs.axis
    if not isinstance(index, tvm.ir.expr.Constant) or axis is None or int(axis) != 0:
        return None
    value = index.value.numpy()
    if value.ndim != 0 or value.dtype.kind not in "iu":
        return None
    ty = stacked.ty
    if not isinstance(ty, relax.TensorType) or ty.ndim != 5 or ty.shape is None:
        return None
    layers = ty.shape.values[0]
    if not isinstance(layers, tvm.tirx.IntImm) or not 0 <= int(value) < int(layers):
        return None
    return stacked, int(value)


@relax.expr_functor.mutator
class _Rewrite(relax.PyExprMutator):
    def __init__(self, module: tvm.IRModule) -> None:
        super().__init__(module)
        self.count = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not (isinstance(call.op, tvm.ir.Op) and call.op.same_as(_CONCAT)) or call.attrs.axis is None \
                or int(call.attrs.axis) not in (2, -2):
            return call
        fields = call.args[0]
        if not isinstance(fields, relax.Tuple) or len(fields.fields) != 2:
            return call
        first, new = fields.fields
        found = _layer_slice(self.lookup_binding(first)) if isinstance(first, relax.Var) else None
        if found is None or not isinstance(new.ty, relax.TensorType) or new.ty.ndim != 4 \
                or new.ty.dtype != found[0].ty.dtype:
            return call
        stacked, layer = found
        self.count += 1
        return self.builder_.call_te(kv_append_te, stacked, new, layer, primfunc_name_hint=KIND,
                                     primfunc_attrs={KERNEL_ATTR: KIND, LAYER_ATTR: layer})


@tvm.transform.module_pass(opt_level=0, name="slmc_kv_append")
def kv_append(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Rewrite every such append in every Relax function of ``mod`` (see the module docstring)."""
    rewriter = _Rewrite(mod)
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gv, relax.analysis.remove_all_unused(rewriter.visit_expr(func)))
    return rewriter.builder_.finalize() if rewriter.count else mod
