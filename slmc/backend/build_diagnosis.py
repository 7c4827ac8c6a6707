"""Saying where a TVM build failed: the pass that was running, or the kernels code generation rejects.

TVM's build errors are C++ check failures that rarely name what they were working on (e.g.
``InternalError: Check failed: (t.MatchesCode(DLDataTypeCode::kDLFloat)) is false`` from LLVM code
generation, for an addition of two ``bool`` values). ``tracking_passes`` records the passes running
when an error escapes (a pass instrument on the current ``PassContext``); when the failure comes
after slmc's Relax pipeline finished, ``failing_kernels`` builds each TIR kernel of the pipeline's
output on its own and names those that fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import tvm
from tvm.ir.instrument import pass_instrument

from slmc.errors import BuildError

# TVM raises InternalError/TVMError (RuntimeError subclasses) from C++, and plain Python errors from
# its Python passes and legalizations.
BUILD_FAILURES = (RuntimeError, ValueError, TypeError, KeyError, AssertionError, NotImplementedError, IndexError,
                  AttributeError, ZeroDivisionError)


@pass_instrument
class PassTracker:
    """The stack of passes running now: a pass that raises never reaches ``run_after_pass``."""

    def __init__(self) -> None:
        self.running: list[str] = []

    def run_before_pass(self, _mod: tvm.IRModule, info: tvm.transform.PassInfo) -> None:
        self.running.append(str(info.name))

    def run_after_pass(self, _mod: tvm.IRModule, info: tvm.transform.PassInfo) -> None:
        if self.running and self.running[-1] == str(info.name):
            self.running.pop()


@contextmanager
def tracking_passes(tracker: PassTracker) -> Iterator[None]:
    """Within the block, the current ``PassContext`` also runs ``tracker`` (its other settings are kept)."""
    context = tvm.transform.PassContext.current()
    saved = list(context.instruments)
    context.override_instruments(saved + [tracker])
    try:
        yield
    finally:
        context.override_instruments(saved)


def failing_kernels(module: tvm.IRModule, target: tvm.target.Target) -> list[str]:
    """Names of the TIR kernels of ``module`` that fail to build on their own for ``target``."""
    failing = []
    for gvar, func in module.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        try:
            tvm.tirx.build(tvm.IRModule({gvar: func}), target=target)
        except BUILD_FAILURES:
            failing.append(gvar.name_hint)
    return sorted(failing)


def build_error(exc: BaseException, target_name: str, tracker: PassTracker, scheduled: tvm.IRModule | None,
                tvm_target: tvm.target.Target, summary: str) -> BuildError:
    """A ``BuildError`` for ``exc`` naming the pass that was running or the kernels that fail to build.

    ``scheduled`` is the module slmc's Relax pipeline produced (None if the pipeline itself failed).
    """
    where = ""
    if tracker.running:
        where = f" in pass {' > '.join(repr(p) for p in tracker.running)}"
    elif scheduled is not None:
        kernels = failing_kernels(scheduled, tvm_target)
        if kernels:
            where = f" generating code for kernel{'s' if len(kernels) > 1 else ''} {', '.join(repr(k) for k in kernels)}"
        else:
            where = " after the Relax pipeline (every kernel builds on its own)"
    return BuildError(f"TVM could not build the model for target '{target_name}'{where}: {summary}")
