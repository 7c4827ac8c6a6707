"""slmc's Relax build pipeline: the target's backend's phases, after TVM's backend pipelines.

TVM's default CPU pipeline leaves every kernel unscheduled (one thread, no vectorization); each
backend (``slmc.backend.kinds``) adds its schedule phase after fusion (CPU: slmc's rules then
dlight's; GPU: dlight's GPU rules, so that every kernel has thread bindings). Legalization overrides
fix TVM 0.27 bugs met on real models (see ``legalize_overrides``), for every backend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import tvm
from tvm import relax, te, tirx, topi
from tvm.ir import GenericConst

from slmc.backend.base import PhaseInputs, backend_for
from slmc.library_output import native_stderr
from slmc.spec.target import TargetDescriptor
from slmc.backend.tuning_db import tuning_passes


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


@dataclass
class PipelineRecord:
    """What a pipeline run reports back: schedule notes, and the module it produced (Relax + scheduled TIR)."""

    notes: list[str] = field(default_factory=list)
    module: tvm.IRModule | None = None
    unscheduled: tvm.IRModule | None = None  # fused kernels before scheduling (what `slmc tune` tunes)
    tuning: dict | None = None  # kernels scheduled from the tuning database (slmc.backend.tuning_db), for the manifest


def build_pipeline(target: TargetDescriptor, tvm_target: tvm.target.Target,
                   record: PipelineRecord | None = None, slmc_rules: bool = True) -> tvm.transform.Pass:
    """The module pass ``tvm.compile`` runs as ``relax_pipeline`` for this target: its backend's phases
    (``slmc.backend.base.Backend``) in TVM's order, the tuning database's records before scheduling.

    ``record`` (optional) receives the schedule notes and the module the pipeline produced.
    ``slmc_rules=False`` schedules CPU kernels with dlight's rules only (for benchmarks).
    """
    record = record if record is not None else PipelineRecord()
    backend = backend_for(target)

    @tvm.transform.module_pass(opt_level=0, name="slmc_build_pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        phase = PhaseInputs(target, tvm_target, record.notes, slmc_rules)
        passes = (
            backend.library_dispatch_passes(phase)
            + backend.legalize_passes(phase)
            + tuning_passes(target, record)  # tuned records first; default rules skip scheduled kernels
            + backend.schedule_passes(phase)
            + backend.dataflow_lower_passes(phase)
            + backend.finalize_passes(phase)
        )
        with tvm_target, native_stderr():  # LegalizeOps: topi's take logs a notice that does not apply (slmc.library_output)
            record.module = tvm.transform.Sequential(passes)(mod)
        return record.module

    return _pipeline
