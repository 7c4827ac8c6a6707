"""A MetaSchedule builder that compiles candidates in the tuning process itself.

Why not TVM's ``LocalBuilder``
------------------------------
``LocalBuilder`` builds every candidate in a ``popen_worker`` subprocess, starts a fresh pool for
each batch, and kills a worker whose build exceeds ``timeout_sec`` (30 s). Its build function
(``default_build``) starts with ``import tvm.s_tir.tensor_intrin``, which registers every tensor
intrinsic TVM has (CUDA, ARM, x86, Hexagon ...) by parsing TVMScript: measured here 67 s on the
2-core machine at load 7 (against 0.03-0.05 s for compiling one scheduled matmul candidate). So
the first build in every fresh worker outlives the 30 s timeout, the worker is killed, the next
candidate gets a fresh worker that imports again, and *every* candidate of the batch fails with
"LocalBuilder: Timeout" (16 of 16 in a measured run, 6 min 12 s). docs/tuning.md has the numbers.

This builder runs the same steps as ``default_build`` + ``default_export``
(``RemoveWeightLayoutRewriteBlock``, ``tvm.build``, ``export_library`` as a tar for the runner)
in-process, without the tensor-intrinsic import and without process start-up. Precondition: the
candidates use no tensor intrinsics the tuning process has not registered (true for slmc's CPU
targets: fp32 kernels; a tensorized int8 candidate that needs ``tvm.s_tir.tensor_intrin`` fails
its build and is reported as a build error, it does not hang). A crashing build would take the
tuning process down with it; TVM's LLVM codegen has not done so on any candidate measured.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import tempfile
import time

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder

from slmc.backend.lowering import TVM_FAILURES

TENSOR_INTRIN = "tvm.s_tir.tensor_intrin"
CPU_INTRINSICS = ("dot_product_common", "x86", "arm_cpu", "riscv_cpu")


def register_cpu_intrinsics() -> bool:
    """Register only TVM's CPU tensor intrinsics, instead of ``import tvm.s_tir.tensor_intrin``.

    ``TuneContext`` imports ``tvm.s_tir.tensor_intrin`` on construction; that package's
    ``__init__`` imports every backend's intrinsics, and ``cuda`` alone took 58 s of it here (load
    14) against 8 s for the CPU modules (docs/tuning.md). For a CPU target the package is made
    importable without running its ``__init__`` (a module object from its import spec, whose
    ``__path__`` still finds every submodule, so an explicit ``tensor_intrin.cuda`` import works),
    and the CPU submodules are imported. Does nothing if the package is already imported.
    Returns whether it registered the CPU subset.
    """
    if TENSOR_INTRIN in sys.modules:
        return False
    spec = importlib.util.find_spec(TENSOR_INTRIN)
    package = importlib.util.module_from_spec(spec)
    sys.modules[TENSOR_INTRIN] = package
    for name in CPU_INTRINSICS:
        importlib.import_module(f"{TENSOR_INTRIN}.{name}")
    return True


# Counters for the tuning report: candidates built, failed, and seconds spent building.
STATS = {"built": 0, "failed": 0, "seconds": 0.0}


def reset_stats() -> None:
    STATS.update(built=0, failed=0, seconds=0.0)


def build_candidate(build_input: BuilderInput) -> BuilderResult:
    """Compile one candidate and export it as a tar for the runner (TVM's default steps)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    from tvm.support.tar import tar

    start = time.perf_counter()
    try:
        mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(build_input.mod)
        library = tvm_build(mod, target=build_input.target)
        path = os.path.join(tempfile.mkdtemp(prefix="slmc-tune-"), "candidate." + tar.output_format)
        library.export_library(path, fcompile=tar)
        result = BuilderResult(path, None)
        STATS["built"] += 1
    except TVM_FAILURES as exc:
        result = BuilderResult(None, f"slmc in-process builder: {type(exc).__name__}: {exc}")
        STATS["failed"] += 1
    STATS["seconds"] += time.perf_counter() - start
    return result


@derived_object
class InProcessBuilder(PyBuilder):
    """Builds MetaSchedule candidates sequentially in this process (see the module docstring)."""

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        return [build_candidate(b) for b in build_inputs]
