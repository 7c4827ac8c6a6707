"""Thread bindings for every GPU kernel: TVM's dlight GPU rules, applied kernel by kernel.

A GPU kernel without thread bindings does not build (TVM's ``VerifyMemory``) or, worse, runs on
one thread. dlight's GPU rules (Matmul, GEMV, Reduction, GeneralReduction, Fallback) are tried in
that order on each fused PrimFunc, as in TVM's ``gpu_generic`` pipeline; the first that returns a
schedule wins. Unlike ``dlight.ApplyDefaultSchedule``, a rule whose own analysis fails on a kernel
(TVM 0.27's ``Reduction`` asserts on a reduction that reads no buffer, e.g. ``sum(full(...))``)
counts as "does not apply": the next rule is tried and the failure is recorded in the build notes.
A kernel that no rule schedules is an error naming the kernel, never a silent skip.

Preconditions: the module has been legalized and fused (PrimFuncs of one fused op each), and the
pass runs inside the GPU ``tvm.target.Target`` (the rules read its thread and memory limits).
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.s_tir import dlight

# What a dlight rule raises when its own analysis does not cover a kernel: Python asserts and
# TVM's ScheduleError/InternalError (RuntimeError subclasses), index and type errors on odd shapes.
RULE_FAILURES = (AssertionError, RuntimeError, ValueError, IndexError, TypeError)


def gpu_rules() -> list[dlight.ScheduleRule]:
    """dlight's GPU rules in the order TVM's ``gpu_generic`` pipeline applies them."""
    return [dlight.gpu.Matmul(), dlight.gpu.GEMV(), dlight.gpu.Reduction(), dlight.gpu.GeneralReduction(), dlight.gpu.Fallback()]


def schedule_gpu_kernels(notes: list[str]) -> tvm.transform.Pass:
    """Module pass: schedule every unscheduled PrimFunc with the first dlight GPU rule that applies.

    Rule failures are appended to ``notes`` (one line each, naming kernel and rule).
    """

    @tvm.transform.module_pass(opt_level=0, name="slmc_schedule_gpu_kernels")
    def _schedule(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        target = tvm.target.Target.current(allow_none=False)
        rules = gpu_rules()
        updated = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or func.attrs.get("tirx.is_scheduled", 0) == 1:
                continue
            kernel = gvar.name_hint
            failures = []
            for rule in rules:
                try:
                    space = rule.apply(func, target, False)
                except RULE_FAILURES as exc:
                    message = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
                    failures.append(f"dlight.gpu.{type(rule).__name__} failed on kernel '{kernel}' "
                                    f"({type(exc).__name__}: {message}); the next rule was tried")
                    continue
                if space is None:
                    continue
                schedule = space[0] if isinstance(space, list) else space
                updated[gvar] = schedule.mod["main"].with_attr("tirx.is_scheduled", True)
                break
            notes.extend(failures)
            if gvar not in updated:
                tried = ", ".join(type(r).__name__ for r in rules)
                # Raised inside TVM's pass manager, which re-raises it as RuntimeError with this message;
                # slmc.backend.lowering.build reports it as a BuildError.
                raise RuntimeError(
                    f"kernel '{kernel}' has no thread bindings: no dlight GPU rule ({tried}) scheduled it"
                    + (f"; failures: {'; '.join(failures)}" if failures else ""))
        for gvar, func in updated.items():
            mod[gvar] = func
        return mod

    return _schedule
