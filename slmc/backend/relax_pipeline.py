"""slmc's Relax build pipeline: the target's backend's phases, after TVM's backend pipelines.

TVM's default CPU pipeline leaves every kernel unscheduled (one thread, no vectorization); each
backend (``slmc.backend.kinds``) adds its schedule phase after fusion (CPU: slmc's rules then
dlight's; GPU: dlight's GPU rules, so that every kernel has thread bindings). Legalization overrides
fix TVM 0.27 bugs met on real models (``slmc.backend.legalize_overrides``), for every backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import tvm

from slmc.backend.base import PhaseInputs, backend_for
from slmc.backend.library_output import native_stderr
from slmc.spec.target import TargetDescriptor
from slmc.backend.tuning_db import tuning_passes


@dataclass
class PipelineRecord:
    """What a pipeline run reports back: schedule notes, and the module it produced (Relax + scheduled TIR)."""

    notes: list[str] = field(default_factory=list)
    module: tvm.IRModule | None = None
    unscheduled: tvm.IRModule | None = None  # fused kernels before scheduling (what `slmc tune` tunes)
    tuning: dict | None = None  # kernels scheduled from the tuning database (slmc.backend.tuning_db), for the manifest
    residency: Any = None  # a causal LM's slmc.schedules.resident_kv.Residency: the cache in, the contract built out


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
        phase = PhaseInputs(target, tvm_target, record.notes, slmc_rules, record.residency)
        passes = (
            backend.library_dispatch_passes(phase)
            + backend.legalize_passes(phase)
            + tuning_passes(target, record)  # tuned records first; default rules skip scheduled kernels
            + backend.schedule_passes(phase)
            + backend.dataflow_lower_passes(phase)
            + backend.finalize_passes(phase)
        )
        with tvm_target, native_stderr():  # LegalizeOps: topi's take logs a notice that does not apply (slmc.backend.library_output)
            record.module = tvm.transform.Sequential(passes)(mod)
        return record.module

    return _pipeline
