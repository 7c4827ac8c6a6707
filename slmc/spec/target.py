"""Target descriptors: what a piece of hardware can do, parsed from YAML into validated models.

Passes ask a descriptor about capabilities (dtypes, group sizes, sparsity patterns, op coverage,
memory, vector width); nothing in slmc branches on a target's name. Built-in descriptors live in
``slmc.targets`` (the repository's ``targets/`` folder) and are addressed by name; a user's own
descriptor by path. Fields set to ``native`` are filled in from the machine slmc runs on when the
descriptor is resolved, and the resolved values are what the manifest records.
"""

from __future__ import annotations

import os
import platform
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError, field_validator, model_serializer,
                      model_validator)

from slmc.errors import FieldProblem, TargetError, TargetNotFoundError, did_you_mean
from slmc.spec.backend_registry import backend_kinds, get_backend, one_of, unknown_kind_message
from slmc.spec.strict_model import StrictModel, problems_from_validation
from slmc.spec.yaml_source import YamlDocument, YamlSyntaxError, parse_yaml, read_yaml

Native = Literal["native"]
WeightDtype = Literal["float32", "float16", "bfloat16", "int8", "int4"]
ActivationDtype = Literal["float32", "float16", "bfloat16", "int8", "int16"]
SparsityPattern = Literal["unstructured", "2:4", "4:8"]
VmExecMode = Literal["bytecode", "compiled"]
Int8Dot = Literal["avx512_vnni", "avx_vnni", "dotprod", "i8mm"]

# Physical bounds of every numeric field. Generous (beyond any device built today) but finite, so that
# a typo (a missing or extra digit group, a value in the wrong unit) is a descriptor error naming the
# field, never an absurd plan later or a TVM traceback (an unbounded num_cores ended in TVM's
# "expected type 'int' but got 'ffi.BigInt'"). Why each bound is safe:
CoreCount = Annotated[int, Field(ge=1, le=8192)]
"""Threads: Linux's largest CONFIG_NR_CPUS (x86-64 MAXSMP) is 8192 logical CPUs."""
MemoryBytes = Annotated[int, Field(ge=1024, le=2**52)]
"""Bytes of RAM: at least 1 KiB (less than any microcontroller that runs a network), at most 4 PiB,
the largest physical address space of x86-64 and of Armv8.2-A LPA (52 bits)."""
OnChipBytes = Annotated[int, Field(ge=1024, le=2**40)]
"""On-chip SRAM or last-level cache: at least 1 KiB, at most 1 TiB (the largest on-chip SRAM,
Cerebras WSE-3's, is 44 GB)."""
LocalMemoryBytes = Annotated[int, Field(ge=1024, le=2**32)]
"""GPU local memory per work-group: at least OpenCL's embedded-profile minimum of 1 KiB, at most
4 GiB (GPUs offer at most 228 KiB, NVIDIA H100; CPU OpenCL drivers report a cache-sized value)."""
KvCacheBytes = Annotated[int, Field(ge=1, le=2**52)]
"""KV-cache budget: at most the largest RAM (see ``MemoryBytes``)."""
BandwidthGbps = Annotated[float, Field(gt=0, le=1e8)]
"""GB/s: at most 100 PB/s (the fastest memory today, Cerebras WSE-3's on-chip SRAM, has 21 PB/s;
HBM3e GPUs about 8 TB/s)."""
VectorWidthBits = Annotated[int, Field(ge=8, le=65536)]
"""SIMD register width: at most RISC-V V's architectural maximum VLEN of 2^16 bits (Arm SVE: 2048)."""
PeakGops = Annotated[float, Field(gt=0, le=1e9)]
"""Peak 1e9 ops/s: at most 1e18 ops/s (a whole wafer-scale chip, WSE-3, peaks at 1.25e17)."""
WorkItems = Annotated[int, Field(ge=1, le=65536)]
"""Work-items per work-group (per axis): GPUs allow 1024, Intel's CPU OpenCL runtime 8192."""
MacsPerCycle = Annotated[int, Field(ge=1, le=2**24)]
"""int8 MACs per cycle: at most 16.7M (a TPU v4 core's four 128x128 MXUs do 65,536)."""
ClockHz = Annotated[int, Field(ge=1_000, le=10**10)]
"""Clock: 1 kHz (below any microcontroller's) to 10 GHz (above the ~9 GHz overclocking record)."""


class DescriptorModel(StrictModel):
    """A section of a descriptor: strict types (no string, bool or float is coerced into an integer,
    no string into a float) and finite floats only (nan and inf are refused)."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False)


class TvmTargetSpec(DescriptorModel):
    """The TVM target, in TVM 0.27's JSON-dict form (``tvm.target.Target(dict)``)."""

    kind: Literal["llvm", "opencl", "cuda", "vulkan", "metal"]
    mtriple: str | None = Field(None, min_length=1, description="LLVM target triple, e.g. aarch64-linux-gnu")
    mcpu: str | None = Field(None, min_length=1, description="LLVM CPU name, or 'native' for this machine")
    mattr: list[str] = Field(default_factory=list, description="LLVM features, e.g. ['+neon', '+dotprod']")
    num_cores: CoreCount | Native | None = Field(None, description="threads the runtime may use")
    host: TvmTargetSpec | None = Field(None, description="host target of a GPU/NPU target")

    @model_validator(mode="after")
    def _check_mattr(self) -> TvmTargetSpec:
        bad = [m for m in self.mattr if not (m[:1] in "+-" and len(m) > 1)]
        if bad:
            raise ValueError(f"mattr entries must start with '+' or '-': {bad}")
        return self

    def to_tvm_dict(self) -> dict[str, Any]:
        """The dict ``tvm.target.Target`` takes (TVM's key names, unset fields left out)."""
        out: dict[str, Any] = {"kind": self.kind}
        for key, tvm_key in (("mtriple", "mtriple"), ("mcpu", "mcpu"), ("num_cores", "num-cores")):
            value = getattr(self, key)
            if value is not None:
                out[tvm_key] = value
        if self.mattr:
            out["mattr"] = list(self.mattr)
        if self.host is not None:
            out["host"] = self.host.to_tvm_dict()
        return out


class Dtypes(DescriptorModel):
    """Data types the target's runtime executes."""

    weights: list[WeightDtype] = Field(min_length=1)
    activations: list[ActivationDtype] = Field(min_length=1)


class Quantization(DescriptorModel):
    """Quantization layouts the target's kernels support."""

    group_sizes: list[Annotated[int, Field(ge=8, le=4096)]] = Field(default_factory=list)
    per_channel: bool = True
    zero_points: bool = Field(True, description="asymmetric formats (per-group zero points) are supported")
    scale_codes: bool = Field(True, description="group scales stored as uint8 codes times a float16 scale per output row "
                              "(double-quantized scales; slmc.quantization.formats) are supported")
    scale_code_bits: list[Literal[6, 8]] = Field(
        default_factory=lambda: [6, 8], description="widths of scale codes the kernels read (with scale_codes): 8 "
        "(one byte per group) and/or 6 (packed four per three bytes, unpacked in the kernel)")
    schemes: list[Literal["weight_only", "w8a8", "w4a8"]] = Field(
        default_factory=lambda: ["weight_only", "w8a8", "w4a8"],
        description="weight_only: low-bit weights, float activations; w8a8: int8 weights and activations; w4a8: int4 "
                    "weights and dynamic per-token int8 activations (also needs compute.int8_dot)")


class Sparsity(DescriptorModel):
    """Sparsity patterns the target's runtime exploits for size or speed (empty: none)."""

    patterns: list[SparsityPattern] = Field(default_factory=list)


class Ops(DescriptorModel):
    """Operator coverage: ``all``, or the ATen op names (e.g. ``linear``, ``softmax``) it executes."""

    supported: Literal["all"] | list[str] = "all"


class Memory(DescriptorModel):
    """Memory of the device, in bytes and GB/s."""

    ram_bytes: MemoryBytes | Native
    sram_bytes: OnChipBytes | None = Field(None, description="on-chip SRAM (NPU) or last-level cache")
    local_memory_bytes: LocalMemoryBytes | None = Field(None, description="GPU local/shared memory per work-group")
    bandwidth_gbps: BandwidthGbps | None = None
    kv_cache_bytes: KvCacheBytes | None = Field(
        None, description="memory a causal LM's KV cache may take; default: half the RAM left after the weights")


class Compute(DescriptorModel):
    """Compute capabilities."""

    vector_width_bits: VectorWidthBits | Native | None = None
    int8_dot: list[Int8Dot] | Native = Field(
        default_factory=list,
        description="int8 dot-product instructions the CPU has: avx512_vnni, avx_vnni (x86 VPDPBUSD), dotprod (Arm "
                    "SDOT), i8mm (Arm SMMLA; no slmc kernel uses it yet); slmc's int8 linears use them "
                    "(slmc.schedules.int8_matmul, int4_int8_matmul); scheme w4a8 needs at least one. Must agree with tvm.mcpu/mattr; 'native': this machine's CPU flags")
    peak_gops: dict[str, PeakGops] = Field(
        default_factory=dict, description="peak operations per second (1e9) by dtype"
    )


class Limits(DescriptorModel):
    """Hard limits kernels must respect (GPU: OpenCL's ``CL_DEVICE_*`` values)."""

    max_workgroup_size: WorkItems | None = Field(None, description="work-items per work-group (CL_DEVICE_MAX_WORK_GROUP_SIZE)")
    max_workgroup_dims: list[WorkItems] | None = Field(
        None, min_length=1, max_length=3, description="work-items per work-group along x, y, z (CL_DEVICE_MAX_WORK_ITEM_SIZES)")
    image_support: bool | None = Field(None, description="kernels may use image objects (CL_DEVICE_IMAGE_SUPPORT)")


VelaAccelerator = Literal["ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u65-512",
                          "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048"]
"""Arm Vela 5.2's ``--accelerator-config`` choices (``vela --help``)."""


class Vela(DescriptorModel):
    """How Arm's Vela compiler (PyPI ``ethos-u-vela``) is run for an Ethos-U NPU (``slmc.npu.vela``):
    the accelerator configuration and a system configuration and memory mode of a Vela ``.ini``
    file (default: the ``Arm/vela.ini`` shipped with Vela)."""

    accelerator_config: VelaAccelerator = Field(description="Vela --accelerator-config: the Ethos-U variant and MACs/cycle")
    system_config: str = Field(min_length=1, description="Vela --system-config: a [System_Config.*] section of the .ini "
                                                         "(clock, AXI ports, memory latencies)")
    memory_mode: str = Field(min_length=1, description="Vela --memory-mode: a [Memory_Mode.*] section of the .ini "
                                                       "(where the arena and the SRAM cache live)")
    config_file: str = Field("Arm/vela.ini", min_length=1, description="Vela --config, relative to Vela's config_files directory")


class Npu(DescriptorModel):
    """An NPU's integer datapath (``kind: npu`` only): what slmc's partition report and integer
    reference (``slmc.npu``) model. int8 x int8 products, int32 accumulation, then a fixed-point
    requantize (int32 multiplier with 31 fractional bits and a right shift) saturated to int8."""

    macs_per_cycle: MacsPerCycle = Field(description="int8 x int8 multiply-accumulates per clock cycle")
    clock_hz: ClockHz = Field(description="NPU clock frequency")
    rounding: Literal["half_up", "half_away_from_zero"] = Field(
        description="rounding of the requantize right shift: half_up adds 2^(shift-1) before an arithmetic shift "
                    "(round half towards +inf); half_away_from_zero rounds ties away from zero")
    tosa_profile: Literal["PRO-INT"] | None = Field(
        None, description="the TOSA 1.0 profile the NPU implements: slmc lowers each partition to TOSA in it "
                          "(slmc.npu.tosa_lowering) and runs the TOSA reference model on it; absent: no TOSA lowering")
    vela: Vela | None = Field(None, description="an Arm Ethos-U NPU: compile each TOSA partition with Vela (needs tosa_profile)")

    @model_validator(mode="after")
    def _vela_needs_tosa(self) -> Npu:
        if self.vela is not None and self.tosa_profile is None:
            raise ValueError("vela compiles the TOSA lowering of the partitions: set tosa_profile (PRO-INT)")
        if self.tosa_profile is not None and self.rounding != "half_up":
            raise ValueError(f"rounding {self.rounding} has no TOSA RESCALE rounding mode (SINGLE_ROUND is half_up): "
                             "with tosa_profile the rounding must be half_up")
        return self


class TargetDescriptor(DescriptorModel):
    """A hardware target. See docs/targets.md for every field."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    kind: str = Field(description="the backend that compiles for it, a kind registered in slmc.backend.kinds: cpu, gpu, npu")
    tvm: TvmTargetSpec
    dtypes: Dtypes
    quantization: Quantization = Quantization()
    sparsity: Sparsity = Sparsity()
    ops: Ops = Ops()
    memory: Memory
    compute: Compute = Compute()
    limits: Limits = Limits()
    npu: Npu | None = Field(None, description="the NPU's integer datapath; required for (and only for) kind npu")
    vm: VmExecMode = Field("bytecode", description="how the Relax VM runs the model's functions: 'bytecode' (TVM's "
                           "interpreter) or 'compiled' (code-generated as TIR/LLVM, TVM's exec_mode 'compiled'; "
                           "kinds whose backend has compiled_vm: cpu)")

    @model_serializer(mode="wrap")
    def _leave_out_the_default_vm(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``vm`` is written only when it is not the default ``bytecode``: a manifest (which embeds its target)
        of a bytecode build keeps the format_version 4 shape that readers before the field accept, and a
        compiled-VM build carries the field, which such readers refuse by name."""
        data = handler(self)
        if self.vm == "bytecode":
            data.pop("vm", None)
        return data

    @field_validator("kind")
    @classmethod
    def _check_kind(cls, kind: str) -> str:
        if kind not in backend_kinds():
            raise ValueError(unknown_kind_message(kind))
        return kind

    @model_validator(mode="after")
    def _check_backend(self) -> TargetDescriptor:
        """What the kind's backend asks of the descriptor: its TVM target kind, the ``npu`` section,
        and its own checks (an NPU's full-integer datapath)."""
        backend = get_backend(self.kind)
        if self.tvm.kind not in backend.tvm_kinds:
            raise ValueError(f"kind '{self.kind}' generates code for tvm.kind {one_of(sorted(backend.tvm_kinds))}, "
                             f"not '{self.tvm.kind}'")
        if backend.npu_section != (self.npu is not None):
            with_section = [k for k in backend_kinds() if get_backend(k).npu_section]
            raise ValueError(f"an 'npu' section is required for kind {one_of(with_section)} and not allowed for other kinds")
        if self.vm == "compiled" and not backend.compiled_vm:
            with_mode = [k for k in backend_kinds() if get_backend(k).compiled_vm]
            raise ValueError(f"vm: 'compiled' is built and run for kind {one_of(with_mode)} only, not '{self.kind}'; "
                             "use vm: bytecode")
        problems = backend.descriptor_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def tvm_dict(self) -> dict[str, Any]:
        """``tvm.to_tvm_dict()``, plus, for a GPU, the descriptor's limits as TVM's schedule limits
        (``max_num_threads``/``max_threads_per_block`` from ``limits.max_workgroup_size``,
        ``max_shared_memory_per_block`` from ``memory.local_memory_bytes``)."""
        out = self.tvm.to_tvm_dict()
        if self.tvm.kind != "llvm":
            if self.limits.max_workgroup_size is not None:
                out["max_num_threads"] = out["max_threads_per_block"] = self.limits.max_workgroup_size
            if self.memory.local_memory_bytes is not None:
                out["max_shared_memory_per_block"] = self.memory.local_memory_bytes
        return out

    def tvm_target(self) -> Any:
        """The ``tvm.target.Target`` (imports TVM)."""
        import tvm

        return tvm.target.Target(self.tvm_dict())

    @property
    def triple_arch(self) -> str:
        """CPU architecture the code is generated for (``x86_64``, ``aarch64``, ...)."""
        spec = self.tvm if self.tvm.kind == "llvm" else (self.tvm.host or self.tvm)
        if spec.mtriple:
            return spec.mtriple.split("-", 1)[0]
        return machine_arch()

    def supports_weight_dtype(self, dtype: str) -> bool:
        return dtype in self.dtypes.weights

    def supports_op(self, op: str) -> bool:
        return self.ops.supported == "all" or op in self.ops.supported

    def runs_here(self) -> tuple[bool, str]:
        """Whether an artifact for this target can execute on this machine, and why (not)."""
        if self.tvm.kind != "llvm":
            return False, f"tvm kind '{self.tvm.kind}' has no runtime on this machine"
        if self.triple_arch != machine_arch():
            return False, f"code is for {self.triple_arch}, this machine is {machine_arch()}"
        system_cpu = _system_cpu()
        if self.tvm.mcpu not in (None, system_cpu):
            return False, f"code is for CPU '{self.tvm.mcpu}', this machine is '{system_cpu}'"
        return True, f"{self.triple_arch} code, CPU '{self.tvm.mcpu or 'generic'}' runs natively"


def machine_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


@cache
def _system_cpu() -> str:
    from slmc.spec.host_cpu import system_cpu

    return system_cpu()


@cache
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def _native_vector_width() -> int:
    flags = _cpu_flags()
    if "avx512f" in flags:
        return 512
    if "avx2" in flags or "avx" in flags:
        return 256
    return 128  # SSE2 on x86-64, NEON/ASIMD on aarch64: both 128-bit


# /proc/cpuinfo flag -> int8 dot-product feature (x86 "flags", aarch64 "Features")
NATIVE_INT8_DOT = {"avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni", "asimddp": "dotprod", "i8mm": "i8mm"}


def _native_int8_dot() -> list[str]:
    flags = _cpu_flags()
    return [feature for flag, feature in NATIVE_INT8_DOT.items() if flag in flags]


def _usable_ram_bytes(physical: int) -> int:
    """Physical RAM, capped by the cgroup v2 memory limit when the process runs under one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text(encoding="utf-8").strip()
    except OSError:
        return physical
    return min(physical, int(limit)) if limit.isdigit() else physical


def _resolve_native(data: dict[str, Any]) -> dict[str, Any]:
    """Replace ``native`` values with this machine's (mcpu, num_cores, ram_bytes, vector width, int8 dot)."""
    import psutil

    natives = {
        ("tvm", "mcpu"): _system_cpu,
        ("tvm", "num_cores"): lambda: len(os.sched_getaffinity(0)),
        ("memory", "ram_bytes"): lambda: _usable_ram_bytes(psutil.virtual_memory().total),
        ("compute", "vector_width_bits"): _native_vector_width,
        ("compute", "int8_dot"): _native_int8_dot,
    }
    for (section, key), detect in natives.items():
        part = data.get(section)
        if isinstance(part, dict) and part.get(key) == "native":
            part[key] = detect()
    return data


def descriptor_from_document(doc: YamlDocument) -> TargetDescriptor:
    """Validate a parsed YAML document as a descriptor and resolve its ``native`` fields."""
    if not isinstance(doc.data, dict):
        found = type(doc.data).__name__ if doc.data is not None else "an empty document"
        raise TargetError(doc.source, [FieldProblem("", f"expected a mapping of descriptor fields, found {found}")])
    try:
        declared = TargetDescriptor.model_validate(doc.data)
        resolved = _resolve_native(declared.model_dump(mode="json"))
        return TargetDescriptor.model_validate(resolved)
    except ValidationError as exc:
        raise TargetError(doc.source, problems_from_validation(exc, doc, TargetDescriptor)) from None


def _builtin_dir() -> resources.abc.Traversable:
    return resources.files("slmc.targets")


def builtin_target_names() -> list[str]:
    """Names of the built-in descriptors, sorted."""
    return sorted(p.name[: -len(".yaml")] for p in _builtin_dir().iterdir() if p.name.endswith(".yaml"))


def load_target(ref: str | Path | TargetDescriptor) -> TargetDescriptor:
    """Resolve a target: a descriptor object, a built-in name, or a path to a YAML file."""
    if isinstance(ref, TargetDescriptor):
        return ref
    text_ref = str(ref)
    builtin = _builtin_dir() / f"{text_ref}.yaml"
    looks_like_path = isinstance(ref, Path) or text_ref.endswith((".yaml", ".yml")) or os.sep in text_ref
    try:
        if not looks_like_path and builtin.is_file():
            return descriptor_from_document(parse_yaml(builtin.read_text(encoding="utf-8"), f"<built-in target {text_ref}>"))
        path = Path(text_ref)
        if path.is_file():
            return descriptor_from_document(read_yaml(path))
    except YamlSyntaxError as exc:
        raise TargetError(text_ref, [exc.problem]) from None
    if looks_like_path:
        raise TargetNotFoundError(f"target descriptor file '{text_ref}' not found")
    names = builtin_target_names()
    raise TargetNotFoundError(f"target '{text_ref}' is neither a built-in target nor an existing descriptor file"
                              f"{did_you_mean(text_ref, names)}; built-in targets: {', '.join(names)}")
