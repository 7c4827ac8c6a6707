"""Base of slmc's CPU schedule rules: a dlight ``ScheduleRule`` that knows the target descriptor.

Rules read the target's features from the descriptor (``compute.vector_width_bits``,
``tvm.num_cores``), never from its name. A rule either returns a schedule or declines (``None``);
a schedule primitive that fails on a kernel the rule's checks let through (TVM raises
``ScheduleError``, a ``RuntimeError``) also declines it, with a note, so the next rule gets it.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight
from tvm.target import Target

from slmc.schedules.row_matmul import CpuParams

KERNEL_ATTR = "slmc.kernel"  # same key as slmc.quantization.tvm_kernels.KERNEL_ATTR


class SlmcCpuRule(dlight.ScheduleRule):
    """Subclasses implement ``schedule(func, target, params)``."""

    def __init__(self, params: CpuParams, notes: list[str] | None = None):
        self.params = params
        self.notes = notes if notes is not None else []
        self.applied: list[str] = []

    @staticmethod
    def kernel_kind(func: tirx.PrimFunc) -> str | None:
        attrs = func.attrs
        return str(attrs[KERNEL_ATTR]) if attrs is not None and KERNEL_ATTR in attrs else None

    def schedule(self, func: tirx.PrimFunc, target: Target, params: CpuParams) -> s_tir.Schedule | None:
        raise NotImplementedError

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        try:
            sch = self.schedule(func, target, self.params)
        except RuntimeError as exc:  # tvm ScheduleError: the kernel is not the shape the rule assumed
            name = func.attrs["global_symbol"] if func.attrs is not None and "global_symbol" in func.attrs else "?"
            self.notes.append(f"{type(self).__name__} declined {name}: {str(exc).splitlines()[0][:160]}")
            return None
        if sch is not None:
            self.applied.append(type(self).__name__)
        return sch
