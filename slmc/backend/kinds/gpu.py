"""Kind ``gpu``: device code (OpenCL, CUDA, Vulkan, Metal) plus host code, every kernel with thread bindings.

Legalization and fusion are slmc's shared passes; schedules are dlight's GPU rules
(``slmc.schedules.gpu``). The artifact is not executed here or through TVM RPC; after verification,
the generated OpenCL kernels are compiled and checked against the descriptor's limits
(``slmc.backend.opencl_kernel_check``), and each kernel PoCL's CPU device can run is executed with
its launch configuration and compared with its host build (``slmc.backend.opencl_kernel_run``);
OpenCL code only. ``slmc tune`` does not apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from slmc.backend.base import Backend, PhaseInputs
from slmc.spec.backend_registry import register_backend

if TYPE_CHECKING:
    import tvm

    from slmc.artifact.manifest import Verification
    from slmc.backend.lowering import RelaxProgram
    from slmc.spec.target import TargetDescriptor


@register_backend("gpu")
class GpuBackend(Backend):
    """A GPU's device code; its kernels checked by an OpenCL compiler when they are OpenCL."""

    tvm_kinds: ClassVar[frozenset[str]] = frozenset({"opencl", "cuda", "vulkan", "metal"})

    def schedule_passes(self, phase: PhaseInputs) -> list[tvm.transform.Pass]:
        from slmc.schedules.gpu import schedule_gpu_kernels

        return [schedule_gpu_kernels(phase.notes)]  # every kernel gets thread bindings (slmc/schedules/gpu.py)

    def check_kernels(self, verification: Verification, executable: Any, program: RelaxProgram,
                      target: TargetDescriptor, verify_enabled: bool) -> Verification:
        from slmc.backend.opencl_verification import opencl_verification

        return opencl_verification(verification, executable, program, target, verify_enabled)  # compiled, limits, executed
