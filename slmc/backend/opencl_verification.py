"""The GPU backend's verification hook for OpenCL builds: every kernel compiled and checked against the
descriptor's limits (``slmc.backend.opencl_kernel_check``), then every kernel PoCL can run executed and
compared with its host build (``slmc.backend.opencl_kernel_run``)."""

from __future__ import annotations

from typing import Any

from slmc.artifact.manifest import OpenCLCheck, Verification
from slmc.backend.lowering import RelaxProgram
from slmc.backend.opencl_kernel_check import check_opencl_kernels, how
from slmc.backend.opencl_kernel_run import execute_kernels, how_executed
from slmc.spec.target import TargetDescriptor


def opencl_verification(report: Verification, executable: Any, program: RelaxProgram, target: TargetDescriptor,
                        verify_enabled: bool) -> Verification:
    """The compile driver's hook: for an OpenCL target that is not executed here (and whose recipe
    does not disable verification), add the kernel check to the verification report: every kernel
    compiled and checked against the limits, then every kernel PoCL can run executed and compared
    with its host build (``slmc.backend.opencl_kernel_run``)."""
    if target.tvm.kind != "opencl" or not verify_enabled or report.executed:
        return report
    summary = check_opencl_kernels(executable, program, target)
    executed = execute_kernels(executable, program, target, summary)
    return report.model_copy(update={"how": f"{how(summary)}; {how_executed(executed)}",
                                     "opencl": OpenCLCheck.model_validate(summary), "gpu_kernels": executed})
