"""OpenCL kernels executed, not only compiled: each run on PoCL's CPU device and compared with its host build.

``slmc.backend.opencl_kernel_check`` compiles every kernel and checks its limits; a wrong thread
binding, a race on ``__local`` memory or an out-of-bounds index compiles fine and shows up only
when the kernel runs. Here every scheduled PrimFunc of the GPU build is run the way TVM's OpenCL
runtime would run it, and its buffers are compared with the same PrimFunc *before* scheduling,
built by TVM for the host CPU (``llvm``) and run on the same inputs:

1. TVM's default TIR pipeline (``opencl_kernel_check.lower_scheduled``, the steps ``tvm.tirx.build``
   takes) splits the PrimFunc into device kernels and a host function. The host function's
   ``compute_scope`` is interpreted: each ``tirx.call_ffi_kernel`` names a kernel, its arguments
   (buffers, scalar shape values) and its launch extents tagged ``blockIdx.*``/``threadIdx.*``
   (TVM's launch-param tags). OpenCL's NDRange is then global = grid * block and local = block per
   axis, as TVM's OpenCL runtime computes it; scalars are passed with the device parameter's dtype.
2. Inputs are drawn for the PrimFunc: every symbolic shape variable is ``SHAPE_VALUE`` (odd, so
   the bounds guards of tiled loops are exercised; all equal, so e.g. ``total_seq_len >= seq_len``
   holds); float buffers are standard normal, integer buffers (token ids, positions, packed int4
   codes) uniform in ``[0, bound)`` with ``bound`` the smallest extent > 1 among the PrimFunc's
   buffers, so an index read from them stays in range of every axis.
3. Every buffer (inputs included: in-place updates such as the resident KV cache count) is
   compared: floats by ``max |opencl - host| / max |host|`` against ``TOLERANCE``, integers exactly.

A kernel is reported ``compiled_only`` with the reason when PoCL's device cannot run it (it enables
``cl_khr_fp16``, which PoCL's CPU device lacks), when its host code does more than launch kernels
(loops, workspace allocations: not interpreted here), or when its unscheduled PrimFunc is unknown.

Preconditions: ``program`` was built by ``slmc.backend.lowering.build`` for an OpenCL target
(``program.scheduled`` and ``program.unscheduled`` are set); PoCL and pyopencl are installed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from tvm import tirx

from slmc.artifact.gpu_kernel_checks import GpuKernelCheck, GpuKernelChecks
from slmc.backend.lowering import RelaxProgram
from slmc.backend.opencl_kernel_check import (OpenCLCompiler, stmt_children, required_extensions, kernel_sources,
                                              lower_module, pocl_compiler)
from slmc.errors import KernelCheckError
from slmc.schedules.prim_params import is_buffer
from slmc.spec.target import TargetDescriptor

SHAPE_VALUE = 7
# max |opencl - host| / max |host| per float dtype. Measured on fixture-lm fp32 for mali-g710: largest
# 4.4e-7 (an RMS norm reduced by 128 work-items, in another order); integer and copy kernels: 0; 1e-5 is the bound.
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}
AXES = "xyz"


class NotRunnable(Exception):
    """Internal: why a PrimFunc's kernels are reported compiled-only (never leaves this module)."""


@dataclass
class Launch:
    kernel: str
    args: list[tuple[str, Any]]  # ("buffer", param name) or ("scalar", value)
    global_size: list[int]
    local_size: list[int]


@dataclass
class PrimFuncRun:
    name: str
    kernels: list[str]
    shape_values: dict[str, int] = field(default_factory=dict)
    launches: list[Launch] = field(default_factory=list)
    reason: str | None = None
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    integer_elements_differing: int | None = None
    failures: list[str] = field(default_factory=list)  # buffer by buffer, what differs


BINARY = {"Add": lambda a, b: a + b, "Sub": lambda a, b: a - b, "Mul": lambda a, b: a * b,
          "FloorDiv": lambda a, b: a // b, "FloorMod": lambda a, b: a % b, "Min": min, "Max": max,
          "Div": lambda a, b: int(a / b), "Mod": lambda a, b: int(np.fmod(a, b))}


def evaluate(expr: Any, env: dict[str, int]) -> int | float:
    """An integer host expression (shape arithmetic) with the variables' values, by name."""
    kind = type(expr).__name__
    if isinstance(expr, (tirx.IntImm, tirx.FloatImm)):
        return expr.value
    if kind == "Var":
        if expr.name not in env:
            raise NotRunnable(f"host code uses '{expr.name}', which is neither a shape variable nor set by the host code")
        return env[expr.name]
    if kind == "Cast":
        return evaluate(expr.value, env)
    if kind in BINARY:
        return BINARY[kind](evaluate(expr.a, env), evaluate(expr.b, env))
    raise NotRunnable(f"host expression {kind} ({expr}) is not interpreted")


def variables(expr: Any) -> list[str]:
    """Names of the variables in a shape expression."""
    kind = type(expr).__name__
    if kind == "Var":
        return [expr.name]
    if kind == "Cast":
        return variables(expr.value)
    if kind in BINARY:
        return variables(expr.a) + variables(expr.b)
    return []


def _launch(call: tvm.ir.Call, kernels: dict[str, tirx.PrimFunc], env: dict[str, int]) -> Launch:
    name = call.args[0].value
    params = kernels[name].params
    values, extents = call.args[1:1 + len(params)], call.args[1 + len(params):]
    tags = list(call.attrs.launch_params)
    grid, block = [1, 1, 1], [1, 1, 1]
    for tag, extent in zip(tags, extents):
        scope, _, axis = tag.partition(".")
        if scope not in ("blockIdx", "threadIdx") or axis not in AXES:
            raise NotRunnable(f"kernel '{name}' has the launch parameter '{tag}' (e.g. dynamic shared memory), not interpreted here")
        (grid if scope == "blockIdx" else block)[AXES.index(axis)] = int(evaluate(extent, env))
    args: list[tuple[str, Any]] = []
    for value in values:
        if isinstance(value, tvm.ir.Call) and value.op.name == "tirx.buffer_data":
            args.append(("buffer", value.args[0].name))
        else:
            args.append(("scalar", evaluate(value, env)))
    return Launch(name, args, [g * b for g, b in zip(grid, block)], block)


def launched_kernels(host: tirx.PrimFunc) -> list[str]:
    """Names of the kernels a host function launches."""
    names, stack = set(), [host.body]
    while stack:
        node = stack.pop()
        if isinstance(node, tirx.Evaluate) and isinstance(node.value, tvm.ir.Call) and node.value.op.name == "tirx.call_ffi_kernel":
            names.add(node.value.args[0].value)
        stack.extend(stmt_children(node))
    return sorted(names)


def host_launches(host: tirx.PrimFunc, kernels: dict[str, tirx.PrimFunc], env: dict[str, int]) -> list[Launch]:
    """The kernel launches of a host function's ``compute_scope``, in order. ``NotRunnable`` when the
    host code does anything but declare buffers, bind values, assert and launch."""
    scopes, stack = [], [host.body]
    while stack:
        node = stack.pop()
        if isinstance(node, tirx.AttrStmt) and node.attr_key == "compute_scope":
            scopes.append(node.body)
            continue
        stack.extend(stmt_children(node))
    if len(scopes) != 1:
        raise NotRunnable(f"its host function has {len(scopes)} compute scopes (one expected)")
    launches: list[Launch] = []
    pending = [scopes[0]]
    while pending:
        node = pending.pop(0)
        kind = type(node).__name__
        if kind == "SeqStmt":
            pending = list(node.seq) + pending
        elif kind in ("DeclBuffer", "AttrStmt", "AssertStmt"):
            pending = stmt_children(node) + pending
        elif kind in ("Bind", "LetStmt"):
            env[node.var.name] = evaluate(node.value, env)
            pending = stmt_children(node) + pending
        elif kind == "Evaluate" and isinstance(node.value, tvm.ir.Call) and node.value.op.name == "tirx.call_ffi_kernel":
            launches.append(_launch(node.value, kernels, env))
        elif kind == "Evaluate" and isinstance(node.value, tirx.IntImm):
            continue
        else:
            raise NotRunnable(f"its host code has a {kind} ({str(node).strip().splitlines()[0][:120]}), which is not interpreted here")
    return launches


def draw_inputs(func: tirx.PrimFunc, seed: int) -> tuple[dict[str, int], dict[str, np.ndarray | int]]:
    """(shape variable values, param name -> array or scalar) for one PrimFunc (module docstring, step 2)."""
    env = {name: SHAPE_VALUE for p in func.params if is_buffer(p) for d in p.shape for name in variables(d)}
    shapes = {p.name: [int(evaluate(d, env)) for d in p.shape] for p in func.params if is_buffer(p)}
    static = [n for shape in shapes.values() for n in shape if n > 1]
    bound = max(1, min([SHAPE_VALUE, *static]))
    rng = np.random.default_rng(seed)
    values: dict[str, np.ndarray | int] = {}
    for p in func.params:
        if not is_buffer(p):  # a shape variable passed as a scalar keeps its value
            values[p.name] = env[p.name] = env.get(p.name, int(rng.integers(0, bound)))
            continue
        try:
            dtype = np.dtype(str(p.dtype))
        except TypeError as exc:  # e.g. bfloat16: numpy has no such dtype
            raise NotRunnable(f"buffer '{p.name}' has dtype {p.dtype}, which numpy cannot hold") from exc
        shape = shapes[p.name]
        if dtype.kind == "f":
            values[p.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            values[p.name] = rng.integers(0, 2, shape).astype(dtype)
        elif dtype.kind in "iu":
            values[p.name] = rng.integers(0, bound, shape).astype(dtype)
        else:
            raise NotRunnable(f"buffer '{p.name}' has dtype {dtype}, for which no inputs are drawn")
    return env, values


def run_on_opencl(compiler: OpenCLCompiler, sources: dict[str, str], kernels: dict[str, tirx.PrimFunc],
                  launches: list[Launch], values: dict[str, np.ndarray | int]) -> dict[str, np.ndarray]:
    """The launches on PoCL, in order on one in-order queue; every buffer read back."""
    import pyopencl as cl

    queue = cl.CommandQueue(compiler.context)
    flags = cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR
    arrays = {name: np.ascontiguousarray(v).copy() for name, v in values.items() if isinstance(v, np.ndarray)}
    buffers = {name: cl.Buffer(compiler.context, flags, hostbuf=a) if a.nbytes else cl.Buffer(compiler.context, cl.mem_flags.READ_WRITE, 1)
               for name, a in arrays.items()}
    programs: dict[str, Any] = {}
    for launch in launches:
        if launch.kernel not in programs:
            programs[launch.kernel] = cl.Kernel(cl.Program(compiler.context, sources[launch.kernel]).build(), launch.kernel)
        kernel = programs[launch.kernel]
        for index, ((what, value), param) in enumerate(zip(launch.args, kernels[launch.kernel].params)):
            if what == "buffer":
                if value not in buffers:
                    raise NotRunnable(f"kernel '{launch.kernel}' reads buffer '{value}', which is not a parameter")
                kernel.set_arg(index, buffers[value])
            else:
                kernel.set_arg(index, np.array(value, dtype=str(param.ty.dtype)))
        try:
            cl.enqueue_nd_range_kernel(queue, kernel, launch.global_size, launch.local_size)
        except cl.Error as exc:
            raise KernelCheckError(launch.kernel, "opencl_execution",
                                   f"PoCL refused to launch kernel '{launch.kernel}' with global {launch.global_size}, "
                                   f"local {launch.local_size}: {exc}") from None
    for name, array in arrays.items():
        if array.nbytes:
            cl.enqueue_copy(queue, array, buffers[name])
    queue.finish()
    return arrays


def run_on_host(library: Any, name: str, func: tirx.PrimFunc, values: dict[str, np.ndarray | int]) -> dict[str, np.ndarray]:
    """The unscheduled PrimFunc, built for the host CPU, on copies of the same inputs."""
    tensors = {p.name: tvm.runtime.tensor(values[p.name].copy()) for p in func.params if is_buffer(p)}
    library[name](*[tensors[p.name] if is_buffer(p) else values[p.name] for p in func.params])
    return {n: t.numpy() for n, t in tensors.items()}


def compare(run: PrimFuncRun, device: dict[str, np.ndarray], host: dict[str, np.ndarray]) -> None:
    """Fill ``run``'s errors; ``run.failures`` names every buffer outside the tolerance."""
    abs_errors, rel_errors, differing = [], [], 0
    for name, expected in host.items():
        got = device[name]
        if expected.size == 0:
            continue
        if expected.dtype.kind == "f":
            both_nan = np.isnan(expected) & np.isnan(got)
            diff = np.where(both_nan, 0.0, np.abs(got.astype(np.float64) - expected.astype(np.float64)))
            diff = np.where(np.isnan(diff), np.inf, diff)
            scale = float(np.max(np.abs(np.nan_to_num(expected.astype(np.float64), nan=0.0))))
            abs_error = float(diff.max())
            rel_error = abs_error / scale if scale > 0 else abs_error
            abs_errors.append(abs_error)
            rel_errors.append(rel_error)
            limit = TOLERANCE.get(str(expected.dtype))
            if limit is None or rel_error > limit:
                worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
                run.failures.append(f"buffer '{name}' ({expected.dtype}{list(expected.shape)}): max relative error {rel_error:.3g} "
                                    f"> {limit}; at {list(map(int, worst))} OpenCL {got[worst]!r}, host {expected[worst]!r}")
        else:
            count = int(np.count_nonzero(got != expected))
            differing += count
            if count:
                worst = tuple(int(i) for i in np.argwhere(got != expected)[0])
                run.failures.append(f"buffer '{name}' ({expected.dtype}{list(expected.shape)}): {count} of {expected.size} "
                                    f"elements differ; first at {list(worst)}: OpenCL {got[worst]!r}, host {expected[worst]!r}")
    run.max_abs_error = max(abs_errors, default=0.0)
    run.max_rel_error = max(rel_errors, default=0.0)
    run.integer_elements_differing = differing


def host_reference(unscheduled: tvm.IRModule | None, names: list[str]) -> tuple[Any, dict[str, tirx.PrimFunc]]:
    """The unscheduled PrimFuncs of ``names`` built together for the host CPU (``llvm``)."""
    if unscheduled is None:
        return None, {}
    funcs = {gv.name_hint: f for gv, f in unscheduled.functions.items() if isinstance(f, tirx.PrimFunc) and gv.name_hint in names}
    if not funcs:
        return None, {}
    module = tvm.IRModule({name: f.without_attr("target").with_attr("global_symbol", name) for name, f in funcs.items()})
    return tvm.tirx.build(module, target=tvm.target.Target("llvm")), funcs


def execute_primfuncs(scheduled: dict[str, tirx.PrimFunc], unscheduled: tvm.IRModule | None, host: tvm.IRModule,
                      kernels: dict[str, tirx.PrimFunc], sources: dict[str, str], compiler: OpenCLCompiler) -> list[PrimFuncRun]:
    """Every host function that launches kernels, run on PoCL and compared with its host build."""
    host_funcs = {gv.name_hint: f for gv, f in host.functions.items() if isinstance(f, tirx.PrimFunc)}
    launching = {name: f for name, f in host_funcs.items() if name in scheduled and launched_kernels(f)}
    library, references = host_reference(unscheduled, sorted(launching))
    runs = []
    for name in sorted(launching):
        run = PrimFuncRun(name, [])
        runs.append(run)
        try:
            env, values = draw_inputs(scheduled[name], zlib.crc32(name.encode()))
            run.shape_values = {k: int(v) for k, v in env.items()}
            run.launches = host_launches(launching[name], kernels, dict(env))
            run.kernels = sorted({launch.kernel for launch in run.launches})
            missing = sorted({ext for k in run.kernels for ext in required_extensions(sources[k]) if ext not in compiler.extensions})
            if missing:
                raise NotRunnable(f"needs {', '.join(missing)}, which PoCL's CPU device '{compiler.device.name}' does not offer")
            untoleranced = sorted({str(v.dtype) for v in values.values()
                                   if isinstance(v, np.ndarray) and v.dtype.kind == "f" and str(v.dtype) not in TOLERANCE})
            if untoleranced:  # e.g. float16 on a device that has cl_khr_fp16: no measured bound to judge it by
                raise NotRunnable(f"its buffers of dtype {', '.join(untoleranced)} have no tolerance against the host build")
            if name not in references:
                raise NotRunnable("its PrimFunc before scheduling is not in the build's record, so there is no host reference")
            reference = references[name]
            if [p.name for p in reference.params] != [p.name for p in scheduled[name].params]:
                raise NotRunnable("its parameters differ from those of its PrimFunc before scheduling")
            device = run_on_opencl(compiler, sources, kernels, run.launches, values)
            compare(run, device, run_on_host(library, name, reference, values))
        except NotRunnable as why:
            run.reason = str(why)
            run.kernels = run.kernels or launched_kernels(launching[name])
    return runs


def _records(runs: list[PrimFuncRun]) -> list[GpuKernelCheck]:
    records = []
    for run in runs:
        for kernel in run.kernels:
            common = {"kernel": kernel, "primfunc": run.name, "shape_values": run.shape_values}
            if run.reason is not None:
                records.append(GpuKernelCheck(status="compiled_only", reason=run.reason, **common))
                continue
            records.append(GpuKernelCheck(
                status="executed", max_abs_error=run.max_abs_error, max_rel_error=run.max_rel_error,
                integer_elements_differing=run.integer_elements_differing, passed=not run.failures,
                launches=[{"global": launch.global_size, "local": launch.local_size} for launch in run.launches if launch.kernel == kernel],
                **common))
    return sorted(records, key=lambda r: r.kernel)


def summarize(runs: list[PrimFuncRun], compiler: OpenCLCompiler) -> GpuKernelChecks:
    records = _records(runs)
    executed = [r for r in records if r.status == "executed"]
    return GpuKernelChecks(
        device=f"PoCL {compiler.version} '{compiler.device.name}' via pyopencl {compiler.pyopencl_version}",
        reference="the same PrimFunc before scheduling, built by TVM for the host CPU (llvm), on the same inputs",
        tolerance=dict(TOLERANCE), kernels=len(records), executed=len(executed), compiled_only=len(records) - len(executed),
        passed=all(r.passed for r in executed), per_kernel=records)


def how_executed(checks: GpuKernelChecks) -> str:
    """The manifest's statement of what was executed where."""
    tolerance = ", ".join(f"{dtype} {limit:g}" for dtype, limit in checks.tolerance.items() if dtype == "float32")
    text = (f"{checks.executed} of {checks.kernels} kernels executed on {checks.device.split(' via ')[0]} with TVM's launch "
            f"configuration and equal to their PrimFunc built for the host CPU (relative {tolerance}, integers exact)")
    if checks.compiled_only:
        first = next(r for r in checks.per_kernel if r.status == "compiled_only")
        text += f"; {checks.compiled_only} compiled only ({first.kernel}: {first.reason})"
    return text


def check_runs(runs: list[PrimFuncRun], summary: GpuKernelChecks, verification: dict[str, Any]) -> None:
    """``KernelCheckError`` (exit 1) naming the first kernel whose buffers differ from its host build."""
    failed = [run for run in runs if run.failures]
    if failed:
        run = failed[0]
        more = f" ({len(failed) - 1} more PrimFuncs differ, see the report)" if len(failed) > 1 else ""
        # buffers are compared per PrimFunc: with several kernels, which one wrote the difference is not known
        named = f"kernel '{run.kernels[0]}'" if len(run.kernels) == 1 else "kernels " + ", ".join(f"'{k}'" for k in run.kernels)
        raise KernelCheckError(run.kernels[0] if len(run.kernels) == 1 else run.name, "opencl_execution",
                               f"{named} (PrimFunc '{run.name}') executed on PoCL differ{'s' if len(run.kernels) == 1 else ''} from the same "
                               f"PrimFunc built for the host CPU: {'; '.join(run.failures[:3])}{more}",
                               {**verification, "gpu_kernels": summary.model_dump(mode="json")})


def execute_kernels(executable: Any, program: RelaxProgram, target: TargetDescriptor,
                    verification: dict[str, Any] | None = None) -> GpuKernelChecks:
    """Run every kernel of an OpenCL build on PoCL and compare it with its host build (module docstring).
    Raises ``KernelCheckError`` naming the kernel on a mismatch; ``verification`` (the compile check's
    summary) goes into the error's report."""
    if program.scheduled is None:
        raise KernelCheckError("<module>", "scheduled_module", "the build kept no scheduled module (was it built by slmc.backend.lowering.build?)")
    return execute_module(program.scheduled, program.unscheduled, kernel_sources(executable), target, verification)


def execute_module(scheduled: tvm.IRModule, unscheduled: tvm.IRModule | None, sources: dict[str, str],
                   target: TargetDescriptor, verification: dict[str, Any] | None = None) -> GpuKernelChecks:
    """``execute_kernels`` for a module of scheduled PrimFuncs, the one before scheduling, and the OpenCL
    source of each kernel (``opencl_kernel_check.split_kernels``)."""
    host, kernels = lower_module(scheduled, target)
    funcs = {gv.name_hint: f for gv, f in scheduled.functions.items() if isinstance(f, tirx.PrimFunc)}
    compiler = pocl_compiler()
    runs = execute_primfuncs(funcs, unscheduled, host, kernels, sources, compiler)
    summary = summarize(runs, compiler)
    check_runs(runs, summary, verification or {})
    return summary
