"""Manifest section: every OpenCL kernel executed on PoCL's CPU device and compared with its host build.

Written by ``slmc.backend.opencl_kernel_run``; ``Verification.gpu_kernels`` holds it. Its own
module, beside ``slmc.artifact.manifest``, which imports it (so it cannot import ``ManifestModel``
from there: the same configuration is spelled out below).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class GpuKernelCheck(BaseModel):
    """One device kernel: ``executed`` (run through pyopencl with TVM's launch configuration and compared
    with the PrimFunc it came from, unscheduled and built for the host CPU) or ``compiled_only`` (``reason``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")

    kernel: str = Field(description="the OpenCL kernel's name in the built module")
    primfunc: str = Field(description="the scheduled PrimFunc it was split from (its other kernels run with it)")
    status: Literal["executed", "compiled_only"]
    reason: str | None = Field(None, description="why it was not executed (compiled_only)")
    shape_values: dict[str, int] = Field(default_factory=dict, description="the symbolic shape variables' values used")
    launches: list[dict[str, list[int]]] = Field(default_factory=list,
                                                 description="each launch of this kernel: OpenCL global and local sizes")
    max_abs_error: float | None = None
    max_rel_error: float | None = Field(None, description="max |opencl - host| / max |host|, over float buffers")
    integer_elements_differing: int | None = None
    passed: bool | None = None


class GpuKernelChecks(BaseModel):
    """All kernels: what was executed where, with which tolerance, and the kernels only compiled."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")

    device: str = Field(description="the OpenCL device that executed the kernels (PoCL's CPU device)")
    reference: str = Field(description="what each kernel was compared with")
    tolerance: dict[str, float] = Field(description="max_rel_error allowed per float dtype; integers must be equal")
    kernels: int
    executed: int
    compiled_only: int
    passed: bool
    per_kernel: list[GpuKernelCheck]
