"""Legalizations that replace TVM 0.27's own for ops whose default legalization is broken; every
backend's legalize phase uses them (``slmc.backend.base.fused_kernel_passes``)."""

from __future__ import annotations

from collections.abc import Callable

from tvm import relax, te, tirx, topi
from tvm.ir import GenericConst


def _legalize_full(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """Legalize ``relax.full``/``relax.full_like`` with the output dtype as a string.

    Same lowering as TVM's default (``topi.full`` for a constant fill value), except that
    the dtype is passed as ``str`` rather than the ``PrimType`` that makes ``topi.full``'s
    inf/nan check crash; a non-constant fill is broadcast with a TE compute.
    Preconditions: ``call`` is a ``relax.full`` or ``relax.full_like`` call whose output
    has a known number of dimensions (``relax.full``) or a known shape (``full_like``).
    """

    dtype = str(call.ty.dtype)
    shape = call.ty.shape
    if shape is None and isinstance(call.args[0].ty, relax.ShapeType):
        shape_var = bb.emit(call.args[0])
        shape = [tirx.Var(f"s{i}", "int64") for i in range(shape_var.ty.ndim)]
        bb.match_cast(shape_var, relax.ShapeType(shape))
    if shape is None:
        raise ValueError(f"relax.full_like with unknown output shape cannot be legalized: {call}")
    shape = list(shape)
    fill = call.args[1]
    if isinstance(fill, GenericConst) and fill.ty.ndim == 0:
        value = fill.value.numpy()[()].item()
        return bb.call_te(topi.full, shape, dtype, value, primfunc_name_hint="full")

    def broadcast(fill_tensor):
        return te.compute(shape, lambda *_: fill_tensor().astype(dtype), name="T_full")

    return bb.call_te(broadcast, fill, primfunc_name_hint="full")


def legalize_overrides() -> dict[str, Callable[[relax.BlockBuilder, relax.Call], relax.Expr]]:
    """Legalizations that replace TVM's own for ops whose default legalization is broken.

    ``relax.full`` / ``relax.full_like``: TVM 0.27 passes the output dtype to ``topi.full`` as a
    ``PrimType``; ``topi.full``'s inf/nan check then raises ``TypeError: argument of type
    'PrimType' is not iterable`` for fills such as ``-inf`` (every causal mask).
    """
    return {"relax.full": _legalize_full, "relax.full_like": _legalize_full}
