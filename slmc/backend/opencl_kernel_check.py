"""Verification of an OpenCL artifact without the GPU: compile every kernel, check every limit.

This machine has no mobile GPU, so an OpenCL artifact cannot be executed here. What can be
checked is the class of failure users otherwise meet only on the phone: a kernel that the device's
OpenCL compiler rejects, or a launch the driver refuses (``CL_INVALID_WORK_GROUP_SIZE`` when a
kernel's work-group is larger than the device allows, as in mlc-llm issue 1844; too much local
memory; image objects on a device without image support). For every kernel TVM generated:

1. its OpenCL C source (one program per kernel, as TVM's OpenCL runtime builds them: the
   sections ``// Function: NAME`` of the OpenCL module's source) is built by a real OpenCL
   compiler, PoCL's CPU device through pyopencl, and the compiler's ``CL_KERNEL_LOCAL_MEM_SIZE``
   is read back (a kernel enabling an extension that device lacks, ``cl_khr_fp16``, is compiled by
   the clang PoCL is built on, for ``spir64`` with the extension enabled; the report says which);
2. its launch work-group (the ``threadIdx.x/y/z`` extents of the device function TVM code-generated)
   is checked against ``limits.max_workgroup_size`` and ``limits.max_workgroup_dims``; its local
   memory (``shared`` allocations, and the compiler's figure) against ``memory.local_memory_bytes``;
   image use against ``limits.image_support``; half/double use against the descriptor's dtypes.

The device functions are recovered by re-running TVM's default TIR pipeline (``tvm.tirx.build``'s
own steps) on the module slmc's Relax pipeline produced; their names must equal the kernels in the
built module, so the launch figures checked are those of the shipped kernels.

Preconditions: ``executable`` was built by ``slmc.backend.lowering.build`` for an OpenCL target (so
``program.scheduled`` holds the pipeline's module). Kernels are compiled here; executing them on
PoCL is ``slmc.backend.opencl_kernel_run`` (``slmc.backend.opencl_verification`` runs both).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import tvm
from tvm import tirx

from slmc.errors import KernelCheckError, ToolchainError
from slmc.backend.lowering import RelaxProgram
from slmc.spec.target import TargetDescriptor

# PoCL caches built programs by source; a cache hit would mean this run compiled nothing.
os.environ.setdefault("POCL_KERNEL_CACHE", "0")

SECTION = re.compile(r"^// Function: (\S+)\s*$", re.M)
THREAD_AXES = ("threadIdx.x", "threadIdx.y", "threadIdx.z")
LOCAL_SCOPES = ("shared", "shared.dyn")
IMAGE_WORDS = re.compile(r"\b(image[123]d(_array|_buffer)?_t|read_image[a-z]*|write_image[a-z]*)\b")


@dataclass
class KernelLaunch:
    """What the device function TVM generated for one kernel launches with."""

    name: str
    workgroup: list[int | str]  # threadIdx x, y, z extents (a string when not a constant)
    local_memory_bytes: int | str  # static __local allocations
    texture_buffers: int = 0  # buffers in TVM's texture (image) scopes


@dataclass
class KernelReport:
    name: str
    workgroup: list[int | str]
    workgroup_size: int | str
    local_memory_bytes: int | str
    compiler_local_memory_bytes: int | None = None
    uses_images: bool = False
    compiled: bool = False
    compiler: str | None = None  # "pocl", or the clang frontend used for an extension PoCL's device lacks
    not_compiled_reason: str | None = None
    extensions: list[str] = field(default_factory=list)  # OpenCL extensions the source enables
    violations: list[dict[str, Any]] = field(default_factory=list)


def kernel_sources(executable: Any) -> dict[str, str]:
    """The OpenCL C program of every kernel in the built module (``// Function: NAME`` sections)."""
    modules, found = [executable.mod], []
    while modules:
        module = modules.pop()
        if module.kind == "opencl":
            found.append(module)
        modules.extend(module.imports)
    if len(found) != 1:
        raise KernelCheckError("<module>", "opencl_module", f"expected one OpenCL device module in the build, found {len(found)}")
    return split_kernels(found[0].inspect_source("cl"))


def split_kernels(source: str) -> dict[str, str]:
    """An OpenCL module's source cut into its ``// Function: NAME`` sections (one program per kernel)."""
    starts = list(SECTION.finditer(source))
    sections = {}
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(source)
        sections[match.group(1)] = source[match.start():end]
    return sections


def stmt_children(node: Any) -> list[Any]:
    info = getattr(type(node), "__tvm_ffi_type_info__", None)
    out = []
    for fld in (info.fields if info is not None else []):
        value = getattr(node, fld.name)
        if isinstance(value, tirx.Stmt):
            out.append(value)
        elif isinstance(value, (list, tuple, tvm.ir.Array)):
            out.extend(v for v in value if isinstance(v, tirx.Stmt))
    return out


def _buffer_bytes(buffer: tirx.Buffer) -> int | str:
    size = 1
    for extent in buffer.shape:
        if not isinstance(extent, tirx.IntImm):
            return f"symbolic ({buffer.name}: {list(buffer.shape)})"
        size *= int(extent)
    dtype = tvm.DataType(str(buffer.dtype))
    return size * dtype.bits * dtype.lanes // 8


def _launch(name: str, func: tirx.PrimFunc) -> KernelLaunch:
    extents: dict[str, int | str] = {}
    local: list[int | str] = []
    textures = 0
    stack = [func.body]
    while stack:
        node = stack.pop()
        if isinstance(node, tirx.AttrStmt) and node.attr_key == "thread_extent":
            tag = str(node.node.thread_tag)
            if tag in THREAD_AXES:
                extents[tag] = int(node.value) if isinstance(node.value, tirx.IntImm) else str(node.value)
        if isinstance(node, (tirx.AllocBuffer, tirx.DeclBuffer)):
            scope = str(node.buffer.scope())
            if scope in LOCAL_SCOPES and isinstance(node, tirx.AllocBuffer):
                local.append(_buffer_bytes(node.buffer))
            if "texture" in scope:
                textures += 1
        stack.extend(stmt_children(node))
    symbolic = [v for v in local if isinstance(v, str)]
    return KernelLaunch(name, [extents.get(a, 1) for a in THREAD_AXES],
                        symbolic[0] if symbolic else int(sum(local)), textures)


def lower_scheduled(program: RelaxProgram, target: TargetDescriptor) -> tuple[tvm.IRModule, dict[str, tirx.PrimFunc]]:
    """TVM's default TIR pipeline on the scheduled module: (host module, kernel name -> device function).
    The host functions launch the kernels (``tirx.call_ffi_kernel`` with their launch extents)."""
    if program.scheduled is None:
        raise KernelCheckError("<module>", "scheduled_module", "the build kept no scheduled module (was it built by slmc.backend.lowering.build?)")
    return lower_module(program.scheduled, target)


def lower_module(scheduled: tvm.IRModule, target: TargetDescriptor) -> tuple[tvm.IRModule, dict[str, tirx.PrimFunc]]:
    """``lower_scheduled`` for any module of scheduled PrimFuncs."""
    from tvm.tirx.build import split_host_device_mods

    prims = {gv: f for gv, f in scheduled.functions.items() if isinstance(f, tirx.PrimFunc)}
    mod = tirx.transform.BindTarget(target.tvm_target())(tvm.IRModule(prims, attrs=scheduled.attrs))
    pipeline, _finalize_host, finalize_device = tvm.tirx.get_tir_pipeline("default")
    host, devices = split_host_device_mods(pipeline(mod))
    kernels = {}
    for device_mod in devices.values():
        for gvar, func in finalize_device()(device_mod).functions.items():
            kernels[str(func.attrs.get("global_symbol", gvar.name_hint))] = func
    return host, kernels


def device_launches(program: RelaxProgram, target: TargetDescriptor) -> dict[str, KernelLaunch]:
    """Kernel name -> launch figures, from the device functions of TVM's default TIR pipeline."""
    return {name: _launch(name, func) for name, func in lower_scheduled(program, target)[1].items()}


@dataclass
class OpenCLCompiler:
    """PoCL's CPU device through pyopencl."""

    context: Any
    device: Any
    version: str
    pyopencl_version: str
    llvm_major: str | None = None  # the LLVM PoCL is built on
    clang: str | None = None  # that LLVM's clang, for kernels needing extensions the CPU device lacks

    @property
    def extensions(self) -> set[str]:
        return set(self.device.extensions.split())


def pocl_compiler() -> OpenCLCompiler:
    """The PoCL device, or ``ToolchainError`` naming what to install."""
    try:
        import pyopencl as cl
    except ImportError:
        raise ToolchainError("checking OpenCL kernels needs pyopencl: pip install pyopencl") from None
    try:
        platforms = cl.get_platforms()
    except cl.Error:  # no ICD at all: clGetPlatformIDs fails with PLATFORM_NOT_FOUND_KHR
        platforms = []
    pocl = [p for p in platforms if "pocl" in p.version.lower() or "portable computing language" in p.name.lower()]
    if not pocl or not pocl[0].get_devices():
        raise ToolchainError("checking OpenCL kernels needs PoCL's OpenCL device; on Debian/Ubuntu: apt-get install pocl-opencl-icd")
    platform = pocl[0]
    device = platform.get_devices()[0]
    match = re.search(r"PoCL (\d+\.\d+(\.\d+)?)", platform.version, re.I)
    version = match.group(1) if match else platform.version
    llvm = re.search(r"LLVM (\d+)", platform.version)
    llvm_major = llvm.group(1) if llvm else None
    clang = shutil.which(f"clang-{llvm_major}") if llvm_major else None
    return OpenCLCompiler(cl.Context(devices=[device]), device, version, cl.VERSION_TEXT, llvm_major, clang)


def required_extensions(source: str) -> list[str]:
    """Extensions the source enables. TVM enables ``cl_amd_fp16`` only as the fallback of ``cl_khr_fp16``
    (``#ifdef cl_khr_fp16 ... #elif defined(cl_amd_fp16)``), so it is not required when both appear."""
    found = re.findall(r"#pragma\s+OPENCL\s+EXTENSION\s+(\w+)\s*:\s*enable", source)
    return [ext for ext in found if not (ext == "cl_amd_fp16" and "cl_khr_fp16" in found)]


def _compile(compiler: OpenCLCompiler, name: str, source: str, report: KernelReport) -> None:
    import pyopencl as cl

    missing = [ext for ext in required_extensions(source) if ext not in compiler.extensions]
    if missing:
        _compile_with_clang(compiler, name, source, missing, report)
        return
    try:
        program = cl.Program(compiler.context, source).build()
    except cl.Error as exc:
        raise KernelCheckError(name, "opencl_compile", f"PoCL {compiler.version} could not compile kernel '{name}': "
                               + _build_log(exc)) from None
    kernel = cl.Kernel(program, name)
    report.compiler_local_memory_bytes = int(kernel.get_work_group_info(cl.kernel_work_group_info.LOCAL_MEM_SIZE, compiler.device))
    report.compiled, report.compiler = True, "pocl"


def _compile_with_clang(compiler: OpenCLCompiler, name: str, source: str, missing: list[str], report: KernelReport) -> None:
    """A kernel that enables an extension PoCL's CPU device lacks (``cl_khr_fp16``: TVM guards every
    half-precision program with ``#error`` when it is absent) is compiled by the clang PoCL is built
    on, as OpenCL C 1.2 for ``spir64`` with the extensions enabled: the same frontend, no CPU backend."""
    why = f"needs {', '.join(missing)}, which PoCL's CPU device '{compiler.device.name}' does not offer"
    if compiler.clang is None:
        report.not_compiled_reason = f"{why}, and clang-{compiler.llvm_major} (its OpenCL C frontend) is not installed"
        return
    enable = [arg for ext in missing for arg in ("-Xclang", f"-cl-ext=+{ext}")]
    command = [compiler.clang, "-x", "cl", "-cl-std=CL1.2", "-target", "spir64-unknown-unknown",
               "-Xclang", "-finclude-default-header", *enable, "-c", "-emit-llvm", "-o", os.devnull, "-"]
    result = subprocess.run(command, input=source, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        raise KernelCheckError(name, "opencl_compile", f"clang-{compiler.llvm_major} (OpenCL C, spir64, +{', +'.join(missing)}) "
                               f"could not compile kernel '{name}': " + ("; ".join(errors[:6]) or result.stderr[:600]))
    report.compiled, report.compiler = True, f"clang-{compiler.llvm_major} OpenCL C frontend (spir64, +{', +'.join(missing)}): {why}"


def _build_log(exc: Exception) -> str:
    lines = [line for line in str(exc).splitlines() if "error" in line.lower()]
    return "; ".join(lines[:6]) or str(exc)[:600]


def _violations(report: KernelReport, target: TargetDescriptor) -> list[dict[str, Any]]:
    """Every limit of the descriptor this kernel exceeds, as {limit, measured, maximum, message}."""
    found = []

    def add(limit: str, measured: Any, maximum: Any, message: str) -> None:
        found.append({"limit": limit, "measured": measured, "maximum": maximum, "message": message})

    limits, name = target.limits, report.name
    if isinstance(report.workgroup_size, str):
        add("limits.max_workgroup_size", report.workgroup_size, limits.max_workgroup_size,
            f"kernel '{name}' has a work-group size that is not a constant ({report.workgroup_size})")
    elif limits.max_workgroup_size is not None and report.workgroup_size > limits.max_workgroup_size:
        add("limits.max_workgroup_size", report.workgroup_size, limits.max_workgroup_size,
            f"kernel '{name}' launches work-groups of {report.workgroup_size} work-items "
            f"({'x'.join(map(str, report.workgroup))}); the target allows {limits.max_workgroup_size}")
    for axis, (extent, maximum) in enumerate(zip(report.workgroup, limits.max_workgroup_dims or [])):
        if isinstance(extent, int) and extent > maximum:
            add(f"limits.max_workgroup_dims.{axis}", extent, maximum,
                f"kernel '{name}' has {extent} work-items along {'xyz'[axis]}; the target allows {maximum}")
    local_limit = target.memory.local_memory_bytes
    used = [v for v in (report.local_memory_bytes, report.compiler_local_memory_bytes) if v is not None]
    if any(isinstance(v, str) for v in used):
        add("memory.local_memory_bytes", report.local_memory_bytes, local_limit,
            f"kernel '{name}' allocates local memory of a size that is not a constant ({report.local_memory_bytes})")
    elif local_limit is not None and used and max(used) > local_limit:
        add("memory.local_memory_bytes", max(used), local_limit,
            f"kernel '{name}' uses {max(used)} bytes of local memory; the target has {local_limit}")
    if report.uses_images and not limits.image_support:
        add("limits.image_support", True, limits.image_support,
            f"kernel '{name}' uses OpenCL image objects; the target descriptor does not declare image support")
    return found


def _dtype_violations(report: KernelReport, target: TargetDescriptor) -> list[dict[str, Any]]:
    """half (``cl_khr_fp16``) needs float16 among the descriptor's dtypes; double is never allowed."""
    dtypes = set(target.dtypes.weights) | set(target.dtypes.activations)
    found, name, extensions = [], report.name, report.extensions
    if "cl_khr_fp16" in extensions and "float16" not in dtypes:
        found.append({"limit": "dtypes", "measured": "float16", "maximum": sorted(dtypes),
                      "message": f"kernel '{name}' computes in float16 (cl_khr_fp16); the target's dtypes are {sorted(dtypes)}"})
    if "cl_khr_fp64" in extensions:
        found.append({"limit": "dtypes", "measured": "float64", "maximum": sorted(dtypes),
                      "message": f"kernel '{name}' computes in float64 (cl_khr_fp64), which no descriptor dtype allows"})
    return found


def compile_kernels(executable: Any, program: RelaxProgram, target: TargetDescriptor) -> tuple[list[KernelReport], OpenCLCompiler]:
    """Every kernel's launch figures (from TVM's device functions) and its PoCL compile.

    Raises ``KernelCheckError`` (exit 1) for a kernel PoCL rejects, ``ToolchainError`` if PoCL or
    pyopencl is missing.
    """
    sources = kernel_sources(executable)
    launches = device_launches(program, target)
    if set(sources) != set(launches):
        only_built, only_tir = sorted(set(sources) - set(launches)), sorted(set(launches) - set(sources))
        raise KernelCheckError(
            "<module>", "kernel_names",
            f"the built OpenCL module and TVM's device functions disagree: only built {only_built}, only in TIR {only_tir}")
    compiler = pocl_compiler()
    reports = []
    for name in sorted(sources):
        launch = launches[name]
        size = math.prod(launch.workgroup) if all(isinstance(v, int) for v in launch.workgroup) else "x".join(map(str, launch.workgroup))
        report = KernelReport(name, launch.workgroup, size, launch.local_memory_bytes,
                              uses_images=bool(launch.texture_buffers or IMAGE_WORDS.search(sources[name])),
                              extensions=required_extensions(sources[name]))
        _compile(compiler, name, sources[name], report)
        reports.append(report)
    return reports, compiler


def check_kernels(reports: list[KernelReport], compiler: OpenCLCompiler, target: TargetDescriptor) -> dict[str, Any]:
    """Check compiled kernels against the descriptor; the manifest's report.

    Raises ``KernelCheckError`` (exit 1) naming the kernel and the limit for the first violation;
    every violation is in the error's ``verification``.
    """
    checked = [replace(r, violations=_violations(r, target) + _dtype_violations(r, target)) for r in reports]
    failures = [(r, v) for r in checked for v in r.violations]
    summary = _summary(checked, compiler, target)
    if failures:
        report, violation = failures[0]
        more = f" ({len(failures) - 1} more violations in the report)" if len(failures) > 1 else ""
        raise KernelCheckError(report.name, violation["limit"], violation["message"] + more, summary)
    return summary


def check_opencl_kernels(executable: Any, program: RelaxProgram, target: TargetDescriptor) -> dict[str, Any]:
    """Compile every kernel with PoCL and check it against the descriptor (``compile_kernels`` then
    ``check_kernels``)."""
    reports, compiler = compile_kernels(executable, program, target)
    return check_kernels(reports, compiler, target)


def _summary(reports: list[KernelReport], compiler: OpenCLCompiler, target: TargetDescriptor) -> dict[str, Any]:
    compiled = [r for r in reports if r.compiled]
    sizes = [r.workgroup_size for r in reports if isinstance(r.workgroup_size, int)]
    local = [max(v for v in (r.local_memory_bytes, r.compiler_local_memory_bytes) if isinstance(v, int))
             for r in reports if isinstance(r.local_memory_bytes, int)]
    return {
        "compiler": f"PoCL {compiler.version} via pyopencl {compiler.pyopencl_version}",
        "compiler_device": compiler.device.name,
        "kernels": len(reports),
        "kernels_compiled": len(compiled),
        "kernels_compiled_by_pocl": sum(r.compiler == "pocl" for r in compiled),
        "kernels_compiled_by_clang": [{"kernel": r.name, "how": r.compiler} for r in compiled if r.compiler != "pocl"],
        "not_compiled": [{"kernel": r.name, "reason": r.not_compiled_reason} for r in reports if not r.compiled],
        "limits": {
            "max_workgroup_size": target.limits.max_workgroup_size,
            "max_workgroup_dims": target.limits.max_workgroup_dims,
            "local_memory_bytes": target.memory.local_memory_bytes,
            "image_support": target.limits.image_support,
        },
        "largest_workgroup": max(sizes, default=0),
        "largest_local_memory_bytes": max(local, default=0),
        "kernels_using_images": sum(r.uses_images for r in reports),
        "violations": [v for r in reports for v in r.violations],
        "per_kernel": [asdict(r) for r in reports],
    }


def how(summary: dict[str, Any]) -> str:
    """The manifest's one-line statement of what the compile check did (compiling only; the execution on
    PoCL, slmc.backend.opencl_verification, appends its own statement)."""
    text = (f"kernels compiled by an OpenCL compiler ({summary['compiler'].split(' via ')[0]} via pyopencl), "
            f"{summary['kernels_compiled_by_pocl']} kernels, limits checked")
    by_clang = summary["kernels_compiled_by_clang"]
    if by_clang:
        text += f"; {len(by_clang)} of {summary['kernels']} kernels compiled instead by {by_clang[0]['how']}"
    skipped = summary["not_compiled"]
    if skipped:
        text += (f"; {len(skipped)} of {summary['kernels']} kernels not compiled ({skipped[0]['reason']}), "
                 "their limits checked from TVM's device functions")
    return text
