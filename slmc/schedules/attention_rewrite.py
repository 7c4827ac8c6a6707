"""Relax rewrite: attention's batched matmuls read the KV cache as it is, without repeated or transposed copies.

Hugging Face attention (and TVM's import of it) turns ``scores = Q K^T`` and ``out = P V`` with
grouped-query attention (``H`` query heads sharing ``H_kv`` key/value heads, ``g = H / H_kv``) into::

    K_rep = reshape(broadcast_to(expand_dims(K, 2), [1, H_kv, g, N, D]), [1, H, N, D])  # repeat_kv
    scores = matmul(reshape(Q, [H, M, D]), reshape(permute_dims(K_rep, [0, 1, 3, 2]), [H, D, N]))
    out = matmul(reshape(P, [H, M, N]), reshape(V_rep, [H, N, D]))

(each ``reshape`` possibly after a ``broadcast_to`` to the shape its input already has), which
copies every cached key and value ``g`` times, once more transposed, at every step. This pass
replaces such a matmul by a kernel that reads ``K`` / ``V`` (``[1, H_kv, N, D]``, the layout of the
cache) directly::

    attention_scores[h, m, n] = sum_d Q[h, m, d] * K[0, h // g, n, d]
    attention_values[h, m, d] = sum_n P[h, m, n] * V[0, h // g, n, d]

Why it is exact: ``expand_dims``/``broadcast_to``/``reshape`` make ``K_rep[0, h] = K[0, h // g]``
(head ``h = kv * g + r`` of the row-major ``[H_kv, g]`` pair), ``permute_dims`` only swaps the two
indices that the matmul then reads swapped back, so every output is the sum of the same products
over the same axis; only the summation order is left to the schedule, as for any matmul kernel.
Without grouping (``H_kv = H``, HF's ``repeat_kv`` returns early) the same holds with ``g = 1``.
A matmul whose operand chain differs in any way (other axes, shapes, a batch above 1) is left as it is.
The kernels carry ``slmc.kernel = attention_scores`` / ``attention_values``
(``slmc.schedules.attention`` schedules them). Reference for grouped-query attention: Ainslie et al.,
"GQA: Training Generalized Multi-Query Transformer Models from Multi-Head Checkpoints", EMNLP 2023.
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import relax, te, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator

from slmc.schedules.relax_patterns import is_op, same_shape, same_size, shape_of
from slmc.schedules.rule import KERNEL_ATTR

SCORES = "attention_scores"
VALUES = "attention_values"


def _int_list(values: Any) -> list[int] | None:
    return None if values is None else [int(v) for v in values]


class _Chains:
    """Walks operand chains back through the bindings of one function (``lookup`` gives a var's value)."""

    def __init__(self, lookup):
        self.lookup = lookup

    def value(self, expr: relax.Expr) -> relax.Expr:
        if isinstance(expr, relax.Var):
            bound = self.lookup(expr)
            if bound is not None:
                return bound
        return expr

    def skip_identity_broadcast(self, expr: relax.Expr) -> relax.Expr:
        """``broadcast_to(x, shape of x)`` -> ``x`` (a copy that changes nothing); else ``expr``."""
        value = self.value(expr)
        if is_op(value, "relax.broadcast_to") and same_shape(shape_of(value.args[0]), shape_of(value)):
            return value.args[0]
        return expr

    def reshaped_from(self, expr: relax.Expr, rank: int) -> relax.Expr | None:
        """``x`` when ``expr = reshape(x)`` (after an identity ``broadcast_to``) with ``x`` of ``rank`` dims."""
        value = self.value(expr)
        if not is_op(value, "relax.reshape"):
            return None
        source = self.skip_identity_broadcast(value.args[0])
        shape = shape_of(source)
        return source if shape is not None and len(shape) == rank else None

    def kv_source(self, expr: relax.Expr) -> tuple[relax.Expr, int] | None:
        """``(K, g)`` when ``expr`` ``[1, H, N, D]`` is ``K`` ``[1, H_kv, N, D]`` with each head repeated
        ``g`` times (``repeat_kv``), or ``K`` itself (``g = 1``)."""
        shape = shape_of(expr)
        if shape is None or len(shape) != 4 or not same_size(shape[0], 1) or not isinstance(shape[1], tirx.IntImm):
            return None
        value = self.value(expr)
        if is_op(value, "relax.reshape"):
            broadcast = self.value(value.args[0])
            if not is_op(broadcast, "relax.broadcast_to"):
                return None
            expanded = self.value(broadcast.args[0])
            if not is_op(expanded, "relax.expand_dims") or _int_list(expanded.attrs.axis) != [2]:
                return None
            source, wide = expanded.args[0], shape_of(broadcast)
            kv_shape = shape_of(source)
            if kv_shape is None or len(kv_shape) != 4 or wide is None or len(wide) != 5:
                return None
            kv_heads, group = kv_shape[1], wide[2]
            if not (isinstance(kv_heads, tirx.IntImm) and isinstance(group, tirx.IntImm)):
                return None
            expected = [1, kv_heads, group, shape[2], shape[3]]
            if not same_shape(wide, expected) or int(kv_heads) * int(group) != int(shape[1]) or \
                    not same_shape(kv_shape, [1, kv_heads, shape[2], shape[3]]):
                return None
            return source, int(group)
        return expr, 1


def scores_te(query: te.Tensor, keys: te.Tensor, group: int) -> te.Tensor:
    """``[H, M, D] x [1, H_kv, N, D] -> [H, M, N]``, query head ``h`` reading key head ``h // group``."""
    heads, rows, depth = query.shape
    d = te.reduce_axis((0, depth), name="d")
    return te.compute((heads, rows, keys.shape[2]),
                      lambda h, m, n: te.sum(query[h, m, d] * keys[0, h // group, n, d], axis=d),
                      name="attention_scores")


def values_te(probs: te.Tensor, values: te.Tensor, group: int) -> te.Tensor:
    """``[H, M, N] x [1, H_kv, N, D] -> [H, M, D]``, probability head ``h`` reading value head ``h // group``."""
    heads, rows, length = probs.shape
    n = te.reduce_axis((0, length), name="n")
    return te.compute((heads, rows, values.shape[3]),
                      lambda h, m, d: te.sum(probs[h, m, n] * values[0, h // group, n, d], axis=n),
                      name="attention_values")


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, module: tvm.IRModule):
        super().__init__(module)
        self.chains = _Chains(self.lookup_binding)
        self.rewritten = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802 (TVM's visitor name)
        new = super().visit_call_(call)
        if not is_op(call, "relax.matmul"):
            return new
        replaced = self._attention(call)
        return new if replaced is None else replaced

    def _attention(self, call: relax.Call) -> relax.Expr | None:
        left, right = call.args
        left_shape, right_shape, out_shape = shape_of(left), shape_of(right), shape_of(call)
        if any(s is None or len(s) != 3 for s in (left_shape, right_shape, out_shape)):
            return None
        if not same_size(left_shape[0], right_shape[0]):  # no batch broadcasting
            return None
        if str(call.ty.dtype) != "float32" or str(left.ty.dtype) != "float32" or str(right.ty.dtype) != "float32":
            return None
        inner = self.chains.reshaped_from(right, 4)
        if inner is None:
            return None
        inner_value = self.chains.value(inner)
        if is_op(inner_value, "relax.permute_dims") and _int_list(inner_value.attrs.axes) == [0, 1, 3, 2]:
            kind, te_func, repeated = SCORES, scores_te, inner_value.args[0]   # right = K^T [H, D, N]
            if not same_shape(shape_of(repeated), [1, right_shape[0], right_shape[2], right_shape[1]]):
                return None
        else:
            kind, te_func, repeated = VALUES, values_te, inner               # right = V [H, N, D]
            if not same_shape(shape_of(repeated), [1, *right_shape]):
                return None
        found = self.chains.kv_source(repeated)
        if found is None:
            return None
        source, group = found
        if str(source.ty.dtype) != "float32":
            return None
        self.rewritten += 1
        return self.builder_.call_te(te_func, self.visit_expr(left), self.visit_expr(source), group,
                                     primfunc_name_hint=kind, primfunc_attrs={KERNEL_ATTR: kind})


@tvm.transform.module_pass(opt_level=0, name="slmc_attention_rewrite")
def attention_rewrite(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Rewrite every Relax function's attention matmuls (see the module docstring); dead copies are removed."""
    rewriter = _Rewriter(mod)
    for gvar, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    out = rewriter.builder_.get()
    return relax.transform.DeadCodeElimination()(out) if rewriter.rewritten else mod
