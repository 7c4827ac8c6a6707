"""What slmc's Relax rewrites ask of an expression while matching a pattern: its operator, static shape,
scalar constant value, and whether two sizes (or shapes) are the same (``attention_rewrite``, ``flash_rewrite``,
``residual_norm``, ``norms``); and ``RewriteRecord``, what a layer-by-layer rewrite did, for the lowering notes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import tvm
import tvm_ffi
from tvm import relax, tirx
from tvm.sym.analyzer import Analyzer

from slmc.schedules.rule import KERNEL_ATTR

_CALL_TIR_OPS = (tvm.ir.Op.get("relax.call_tir"), tvm.ir.Op.get("relax.call_tir_inplace"))


def is_op(expr: Any, name: str) -> bool:
    """``expr`` is a call of the Relax operator ``name`` (e.g. ``"relax.add"``)."""
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name


def called_kernel(mod: tvm.IRModule, expr: Any) -> tuple[str | None, tirx.PrimFunc | None]:
    """The slmc kernel (its ``KERNEL_ATTR`` kind and PrimFunc) ``expr`` calls through ``call_tir`` or
    ``call_tir_inplace``; ``(None, None)`` for anything else."""
    if isinstance(expr, relax.Call) and any(expr.op.same_as(op) for op in _CALL_TIR_OPS):
        func = mod[expr.args[0]]
        if isinstance(func, tirx.PrimFunc) and func.attrs is not None and KERNEL_ATTR in func.attrs:
            return str(func.attrs[KERNEL_ATTR]), func
    return None, None


def shape_of(expr: relax.Expr) -> list[Any] | None:
    """The dimensions of a tensor with a known shape (constants or symbolic expressions), else ``None``."""
    shape = getattr(expr.ty, "shape", None)
    return list(shape.values) if isinstance(shape, relax.ShapeExpr) else None


def scalar_constant(expr: Any, floats_only: bool = False) -> float | None:
    """The value of a one-element constant (a float one with ``floats_only``), else ``None``."""
    if not isinstance(expr, tvm.ir.expr.Constant):
        return None
    value = expr.value.numpy()
    if value.size != 1 or (floats_only and value.dtype.kind != "f"):
        return None
    return float(value.reshape(()))


def same_size(a: Any, b: Any) -> bool:
    """Two sizes are the same constant, or symbolic expressions provably equal (``p + t`` is ``t + p``:
    TVM's import writes a cache length either way round)."""
    if isinstance(a, (int, tirx.IntImm)) or isinstance(b, (int, tirx.IntImm)):
        return isinstance(a, (int, tirx.IntImm)) and isinstance(b, (int, tirx.IntImm)) and int(a) == int(b)
    return tvm_ffi.structural_equal(a, b) or Analyzer().can_prove_equal(a, b)


def same_shape(a: list[Any] | None, b: list[Any] | None) -> bool:
    """Two known shapes (``shape_of``) of the same rank whose sizes are pairwise ``same_size``; an unknown one
    (``None``) is never the same."""
    return a is not None and b is not None and len(a) == len(b) and all(same_size(x, y) for x, y in zip(a, b))


@dataclass
class RewriteRecord:
    """What a layer-by-layer Relax rewrite did: layers rewritten per function, and why a candidate was left.
    A subclass names its two notes: ``DONE`` (formatted with the ``function count, ...`` list) and ``DECLINED``
    (with one reason)."""

    DONE: ClassVar[str]
    DECLINED: ClassVar[str]
    rewritten: dict[str, int] = field(default_factory=dict)
    declined: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        done = ", ".join(f"{name} {n}" for name, n in sorted(self.rewritten.items()))
        out = [self.DONE.format(done)] if done else []
        return out + [self.DECLINED.format(reason) for reason in sorted(set(self.declined))]
