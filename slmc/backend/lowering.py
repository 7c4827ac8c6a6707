"""Lowering: slmc graph -> torch.export program -> TVM Relax module -> built TVM executable.

Weights stay outside the library: the Relax ``main`` takes the model inputs followed by every
weight (``keep_params_as_input``), and ``detach_params`` hands them back as arrays that the
artifact stores in ``weights.safetensors``.
"""

from __future__ import annotations

import gc
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from tvm import relax

from slmc.errors import BuildError, LoweringError, ToolchainError, exception_summary
from slmc.graph.ir import Graph, export
from slmc.graph.kv_cache import KVCacheSpec
from slmc.backend.relax_pipeline import PipelineRecord, build_pipeline
from slmc.schedules.prepack import prepack
from slmc.backend.build_diagnosis import BUILD_FAILURES, PassTracker, build_error, tracking_passes
from slmc.backend.deterministic_build import deterministic_call_te, deterministic_pipeline
from slmc.backend.library_output import native_stderr
from slmc.backend.import_diagnosis import conversion_failure_error, unsupported_op_error
from slmc.spec.target import TargetDescriptor, machine_arch
from slmc.backend.tuning_db import target_database

# TVM raises its errors (InternalError, TVMError, ...) as RuntimeError subclasses; its Python
# frontend raises ValueError/TypeError/KeyError/AssertionError for graphs it cannot convert.
TVM_FAILURES = (RuntimeError, ValueError, TypeError, KeyError, AssertionError, NotImplementedError)

LINK_OPTIONS = ["-s"]  # strip symbol tables: the runtime finds kernels through TVM's own registry
CROSS_COMPILERS = {"aarch64": "aarch64-linux-gnu-gcc", "arm": "arm-linux-gnueabihf-gcc"}
DEBIAN_PACKAGES = {"aarch64": "gcc-aarch64-linux-gnu", "arm": "gcc-arm-linux-gnueabihf"}


@dataclass
class RelaxProgram:
    """A Relax module plus its weights, in the order ``main`` takes them after the inputs."""

    module: tvm.IRModule
    weight_names: list[str]
    weights: list[np.ndarray]
    num_inputs: int
    notes: list[str] = field(default_factory=list)
    scheduled: tvm.IRModule | None = None  # set by build(): the module slmc's Relax pipeline produced
    unscheduled: tvm.IRModule | None = None  # set by build(): its fused kernels before scheduling (the GPU kernels' host reference)
    tuning: dict | None = None  # set by build(): kernels scheduled from the tuning database (slmc.backend.tuning_db)
    residency: Any = None  # set by build() for a causal LM: slmc.schedules.resident_kv.Residency (the cache contract built)


def to_relax(graph: Graph) -> RelaxProgram:
    """Export the graph and convert it to Relax with weights detached."""
    from tvm.relax.frontend.torch import from_exported_program

    from slmc.backend.torch_export_fixes import fix_exported_program
    from slmc.quantization.tvm_kernels import CONVERTERS

    program = export(graph)
    program, notes = fix_exported_program(program)
    failure: LoweringError | None = None
    # A failed import leaves TVM's abandoned-BlockBuilder warning on stderr when the importer is freed,
    # so the error is built (from the traceback), the traceback dropped and freed inside the capture.
    with native_stderr():
        try:
            module = from_exported_program(program, keep_params_as_input=True, custom_convert_map=CONVERTERS)
            module, params = relax.frontend.detach_params(module)
        except TVM_FAILURES as exc:
            failure = (unsupported_op_error(program, CONVERTERS) or conversion_failure_error(exc, exception_summary(exc))
                       or LoweringError(f"TVM's torch frontend could not convert the graph: {exception_summary(exc)}"))
        gc.collect()
    if failure is not None:
        raise failure
    return detached_program(module, params, notes, "the graph")


def detached_program(module: tvm.IRModule, params: dict[str, Any], notes: list[str], source: str) -> RelaxProgram:
    """A ``RelaxProgram`` from ``relax.frontend.detach_params``' output (weights after the inputs).
    Takes ``params["main"]`` out of ``params``: the program owns the weights, so none is held twice."""
    main = module["main"]
    num_inputs = int(main.attrs["num_input"])
    names = [str(p.name) for p in main.params[num_inputs:]]
    tensors = params.pop("main", [])  # owned here: a tensor prepack relays out is freed once its copy exists
    arrays = [_host_view(t) for t in tensors]
    tensors.clear()
    if len(names) != len(arrays):
        raise LoweringError(f"TVM returned {len(arrays)} weights for {len(names)} weight parameters of main ({source})")
    module, names, arrays, dropped = _drop_unused_weights(module, names, arrays, num_inputs)
    if dropped:
        notes = [*notes, f"dropped {len(dropped)} weights main never reads ({', '.join(dropped)})"]
    module, arrays, packed = prepack(module, arrays, num_inputs)
    if packed:
        notes = [*notes, f"prepacked {packed} weights into the layout their kernels read (slmc.schedules.prepack)"]
    return RelaxProgram(module, names, arrays, num_inputs, notes)


def _host_view(tensor: Any) -> np.ndarray:
    """A numpy view of a CPU TVM tensor (TVM's torch frontend hands over the graph's own parameter memory
    through DLPack, so no copy of the weights is made: issue 22's compile peak); a copy only for a dtype
    DLPack cannot give numpy (bfloat16)."""
    try:
        return np.from_dlpack(tensor)
    except (BufferError, TypeError, RuntimeError):
        return tensor.numpy()


def build(program: RelaxProgram, target: TargetDescriptor, kv_cache: KVCacheSpec | None = None, *,
          system_lib: bool = False, one_token_step: bool = True) -> tvm.runtime.Executable:
    """Compile the Relax module for the target with slmc's pipeline (scheduled kernels). A causal LM's
    ``kv_cache`` asks for the resident-cache function too (``slmc.schedules.resident_kv``); whether it was
    built, or why not, is ``program.residency``. ``system_lib``: TVM's system-library form, whose objects
    register their symbols at start-up when linked into an executable (the static runner:
    ``export_system_library``). ``one_token_step``: also build ``resident_step``, the one-token decode step
    (``Residency.one_token``; on by default). The VM's functions are bytecode or, with the descriptor's
    ``vm: compiled`` (a kind whose backend has ``compiled_vm``), TIR/LLVM (TVM's ``exec_mode``)."""
    from slmc.schedules.resident_kv import Residency

    tvm_target = target.tvm_target()
    target_database(target)  # a damaged tuning database is bad input (InputError), before TVM wraps it
    record = PipelineRecord(residency=Residency(kv_cache, one_token=one_token_step) if kv_cache is not None else None)
    passes = PassTracker()
    try:
        with deterministic_call_te(), tracking_passes(passes):
            # tvm.compile is relax.build without its system_lib switch
            executable = relax.build(program.module, target=tvm_target, system_lib=system_lib or None, exec_mode=target.vm,
                                     relax_pipeline=deterministic_pipeline(build_pipeline(target, tvm_target, record)))
    except BUILD_FAILURES as exc:
        raise build_error(exc, target.name, passes, record.module, tvm_target, exception_summary(exc)) from exc
    program.notes.extend(record.notes)
    program.scheduled = record.module
    program.unscheduled = record.unscheduled
    program.tuning = record.tuning
    program.residency = record.residency
    if record.residency is not None:
        program.notes.extend(record.residency.notes())
    return executable


def cross_compiler(target: TargetDescriptor) -> str | None:
    """The C compiler that links a shared library for the target, or None for the host's own."""
    arch = target.triple_arch
    if arch == machine_arch():
        return None
    compiler = CROSS_COMPILERS.get(arch)
    if compiler is None:
        raise ToolchainError(f"slmc has no linker for architecture '{arch}' (target '{target.name}')")
    if shutil.which(compiler) is None:
        package = DEBIAN_PACKAGES[arch]
        raise ToolchainError(
            f"linking for target '{target.name}' ({arch}) needs the cross compiler '{compiler}', which is not "
            f"installed; on Debian/Ubuntu: apt-get install {package}"
        )
    return compiler


def export_library(executable: tvm.runtime.Executable, target: TargetDescriptor, path: Path) -> None:
    """Write the shared library for the target (cross-linked when the target is another arch)."""
    from tvm.support import cc

    compiler = cross_compiler(target)
    try:
        if compiler is None:
            executable.export_library(str(path), options=LINK_OPTIONS)
        else:
            executable.export_library(str(path), fcompile=cc.cross_compiler(compiler), options=LINK_OPTIONS)
    except TVM_FAILURES as exc:
        raise BuildError(f"could not link the library for target '{target.name}': {exception_summary(exc)}") from exc


def export_system_library(executable: tvm.runtime.Executable, target: TargetDescriptor, directory: Path) -> list[Path]:
    """The object files of an executable built with ``build(..., system_lib=True)``, written into
    ``directory`` (TVM's tar export, unpacked: the kernels and the VM executable's bytes); no linker
    runs, so any target triple works. ``BuildError`` when TVM cannot write them."""
    import tarfile

    from tvm.support.tar import tar

    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / "model.tar"
    try:
        executable.export_library(str(archive), fcompile=tar)
    except TVM_FAILURES as exc:
        raise BuildError(f"could not write the system-library objects for target '{target.name}': {exception_summary(exc)}") from exc
    with tarfile.open(archive) as members:
        names = [m.name for m in members.getmembers() if m.isfile() and m.name.endswith(".o") and "/" not in m.name]
        members.extractall(directory, members=[members.getmember(n) for n in names], filter="data")
    archive.unlink()
    return [directory / name for name in sorted(names)]


def _drop_unused_weights(module: tvm.IRModule, names: list[str], arrays: list[np.ndarray],
                         num_inputs: int) -> tuple[tvm.IRModule, list[str], list[np.ndarray], list[str]]:
    """Weight parameters ``main`` never reads (e.g. the second name of a tied table that
    torch.export keeps) removed with their arrays: an artifact must not ship bytes nothing uses."""
    main = module["main"]
    used = set(relax.analysis.free_vars(main.body))
    weights = list(zip(main.params[num_inputs:], names, arrays))
    kept = [w for w in weights if w[0] in used]
    if len(kept) == len(weights):
        return module, names, arrays, []
    params = [*main.params[:num_inputs], *(p for p, _, _ in kept)]
    module = tvm.IRModule(dict(module.functions_items()), attrs=module.attrs)
    module["main"] = relax.Function(params, main.body, main.ret_ty, main.is_pure, main.attrs, main.span)
    dropped = [name for p, name, _ in weights if p not in used]
    return module, [n for _, n, _ in kept], [a for _, _, a in kept], dropped
