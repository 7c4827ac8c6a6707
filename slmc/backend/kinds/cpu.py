"""Kind ``cpu``: LLVM code for the CPU the descriptor names, scheduled by slmc's CPU rules.

Legalization adds slmc's CPU rewrites around the shared fusion passes (attention reading the KV
cache in place, ``slmc.schedules.attention_rewrite``; one kernel per RMSNorm and its residual add,
``slmc.schedules.residual_norm``; a vectorizable exp, ``slmc.schedules.fast_exp``);
schedules are slmc's CPU rules, then dlight's, then a fallback (``slmc.schedules``). An artifact
that does not run here can be verified on a TVM RPC device, and ``slmc tune`` measures its kernels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from slmc.backend.base import Backend, PhaseInputs, fused_kernel_passes
from slmc.spec.backend_registry import register_backend

if TYPE_CHECKING:
    import tvm


@register_backend("cpu")
class CpuBackend(Backend):
    """LLVM code for a CPU; the phases ``npu`` reuses for its host code."""

    tvm_kinds: ClassVar[frozenset[str]] = frozenset({"llvm"})
    remote_execution: ClassVar[bool] = True
    supports_tuning: ClassVar[bool] = True
    quantized_kv_cache: ClassVar[bool] = True
    # vm: compiled: built, verified, bit-exact with bytecode in the Python runtime, run by slmc-run and by the
    # static (system-lib) bundle under qemu (docs/dev-notes.md, session 12)
    compiled_vm: ClassVar[bool] = True

    def legalize_passes(self, phase: PhaseInputs) -> list[tvm.transform.Pass]:
        if not phase.slmc_rules:
            return fused_kernel_passes(phase.residency)
        from slmc.schedules import cpu_params
        from slmc.schedules.attention_rewrite import attention_rewrite
        from slmc.schedules.fast_exp import fast_exp_pass
        from slmc.schedules.flash_rewrite import flash_rewrite
        from slmc.schedules.residual_norm import residual_norm
        from slmc.schedules.rotary_kv_rewrite import rotary_kv_rewrite

        # attention reads the KV cache in place, one tiled kernel per layer in the resident functions;
        # each RMSNorm is one kernel with the residual add before it (slmc.schedules.residual_norm);
        # exp is vectorizable (slmc.schedules.fast_exp); the decode step's rotary q/k and cache writes are one kernel
        # per layer (slmc.schedules.rotary_kv_rewrite)
        tiled = flash_rewrite(cpu_params(phase.target).lanes, phase.notes)
        rotary = rotary_kv_rewrite(phase.notes)
        return [attention_rewrite, residual_norm(phase.notes), *fused_kernel_passes(phase.residency, [tiled, rotary]),
                fast_exp_pass]

    def schedule_passes(self, phase: PhaseInputs) -> list[tvm.transform.Pass]:
        from tvm.s_tir import dlight

        from slmc.schedules import cpu_schedule_passes

        if not phase.slmc_rules:  # dlight alone: what slmc did before slmc.schedules (benchmarks compare)
            return [dlight.ApplyDefaultSchedule(dlight.cpu.GEMV(), dlight.cpu.Reduction())]
        return cpu_schedule_passes(phase.target, phase.notes)
