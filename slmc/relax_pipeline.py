"""slmc's Relax build pipeline: TVM's CPU pipeline plus legalization fixes and dlight schedules.

TVM's default CPU pipeline leaves every kernel unscheduled (one thread, no vectorization); slmc
applies the dlight CPU rules (GEMV, Reduction) after fusion. Legalization overrides fix TVM 0.27
bugs met on real models (see ``legalize_overrides``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tvm
from tvm import relax, topi
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline
from tvm.s_tir import dlight

from slmc.target import TargetDescriptor


def _legalize_full(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """``relax.full`` with a float fill value such as -inf (causal masks).

    TVM 0.27's own legalization passes the dtype as a ``PrimType`` to ``topi.full``, whose check
    for infinite fill values does ``"float" in dtype`` and raises ``TypeError``.
    """
    from tvm.relax.transform.legalize_ops.common import _try_convert_to_scalar_const

    fill = _try_convert_to_scalar_const(call.args[1], python_native=True)
    shape = call.args[0]
    if isinstance(shape, relax.ShapeExpr):
        dims = shape.values
    else:
        shape = bb.emit(shape)
        dims = [tvm.tirx.Var(f"s{i}", "int64") for i in range(shape.ty.ndim)]
        bb.match_cast(shape, relax.ShapeType(dims))
    return bb.call_te(topi.full, dims, str(call.ty.dtype), fill, primfunc_name_hint="full")


def legalize_overrides() -> dict[str, Callable[[relax.BlockBuilder, relax.Call], relax.Expr]]:
    """Legalizations that replace TVM's own for ops whose default legalization is broken."""
    from slmc import frontend_fixes

    overrides: dict[str, Any] = {"relax.full": _legalize_full}
    overrides.update(getattr(frontend_fixes, "legalize_overrides", dict)())
    return overrides


def _schedule_passes(target: TargetDescriptor) -> list[tvm.transform.Pass]:
    if target.tvm.kind == "llvm":
        return [dlight.ApplyDefaultSchedule(dlight.cpu.GEMV(), dlight.cpu.Reduction())]
    return [
        dlight.ApplyDefaultSchedule(
            dlight.gpu.Matmul(), dlight.gpu.GEMV(), dlight.gpu.Reduction(), dlight.gpu.GeneralReduction(), dlight.gpu.Fallback()
        )
    ]


def build_pipeline(target: TargetDescriptor, tvm_target: tvm.target.Target) -> tvm.transform.Pass:
    """The module pass ``tvm.compile`` runs as ``relax_pipeline`` for this target."""

    @tvm.transform.module_pass(opt_level=0, name="slmc_build_pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        passes = (
            cpu_pipeline.library_dispatch_passes(tvm_target)
            + [
                relax.transform.LegalizeOps(legalize_overrides()),
                relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(),
                relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
                relax.transform.DeadCodeElimination(),
            ]
            + _schedule_passes(target)
            + cpu_pipeline.dataflow_lower_passes(tvm_target)
            + cpu_pipeline.finalize_passes(tvm_target)
        )
        with tvm_target:
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
