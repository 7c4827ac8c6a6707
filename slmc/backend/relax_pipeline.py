"""slmc's Relax build pipeline: TVM's CPU pipeline plus legalization fixes and dlight schedules.

TVM's default CPU pipeline leaves every kernel unscheduled (one thread, no vectorization); slmc
applies the dlight CPU rules (GEMV, Reduction) after fusion, and for a GPU target dlight's GPU
rules, so that every kernel has thread bindings (``slmc.schedules.gpu``). Legalization overrides
fix TVM 0.27 bugs met on real models (see ``legalize_overrides``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import tvm
from tvm import relax, te, tirx, topi
from tvm.ir import GenericConst
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline
from tvm.s_tir import dlight

from slmc.library_output import native_stderr
from slmc.schedules.gpu import schedule_gpu_kernels
from slmc.schedules.kv_append import kv_append
from slmc.schedules import cpu_schedule_passes
from slmc.schedules.attention_rewrite import attention_rewrite
from slmc.schedules.fast_exp import fast_exp_pass
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


def _schedule_passes(target: TargetDescriptor, record: PipelineRecord, slmc_rules: bool = True) -> list[tvm.transform.Pass]:
    if target.tvm.kind == "llvm":
        if not slmc_rules:  # dlight alone: what slmc did before slmc.schedules (benchmarks compare)
            return [dlight.ApplyDefaultSchedule(dlight.cpu.GEMV(), dlight.cpu.Reduction())]
        return cpu_schedule_passes(target, record.notes)
    # GPU: every kernel gets thread bindings from dlight's GPU rules (slmc/schedules/gpu.py).
    return [schedule_gpu_kernels(record.notes)]


def build_pipeline(target: TargetDescriptor, tvm_target: tvm.target.Target,
                   record: PipelineRecord | None = None, slmc_rules: bool = True) -> tvm.transform.Pass:
    """The module pass ``tvm.compile`` runs as ``relax_pipeline`` for this target.

    ``record`` (optional) receives the schedule notes and the module the pipeline produced.
    ``slmc_rules=False`` schedules CPU kernels with dlight's rules only (for benchmarks).
    """
    record = record if record is not None else PipelineRecord()

    @tvm.transform.module_pass(opt_level=0, name="slmc_build_pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        passes = (
            cpu_pipeline.library_dispatch_passes(tvm_target)
            + ([attention_rewrite] if target.tvm.kind == "llvm" and slmc_rules else [])  # KV cache read in place
            + [
                kv_append,  # each layer's KV append reads the stacked cache in place (slmc.schedules.kv_append)
                relax.transform.LegalizeOps(legalize_overrides()),
                relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(),
                relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
                relax.transform.DeadCodeElimination(),
            ]
            + ([fast_exp_pass] if target.tvm.kind == "llvm" and slmc_rules else [])  # vectorizable exp (slmc.schedules.fast_exp)
            + tuning_passes(target, record)  # tuned records first; default rules skip scheduled kernels
            + _schedule_passes(target, record, slmc_rules)
            + cpu_pipeline.dataflow_lower_passes(tvm_target)
            + cpu_pipeline.finalize_passes(tvm_target)
        )
        with tvm_target, native_stderr():  # LegalizeOps: topi's take logs a notice that does not apply (slmc.library_output)
            record.module = tvm.transform.Sequential(passes)(mod)
        return record.module

    return _pipeline
