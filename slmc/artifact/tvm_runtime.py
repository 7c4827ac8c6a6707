"""TVM's runtime without its compiler: what ``slmc.load`` runs an artifact with.

``import tvm`` loads ``libtvm_compiler.so`` (259 MB, with LLVM) besides ``libtvm_runtime.so``
(3.4 MB), and ``import tvm_ffi`` imports torch when it is installed (for its optional torch
interop; about 200 MB of RSS). Running a compiled artifact needs neither: the Relax VM, the module
loader and tensors live in ``libtvm_runtime.so`` and ``libtvm_ffi.so``. This module reaches them
through ``tvm_ffi`` alone (``tvm_ffi.load_module``, the VM's ``vm_load_executable`` /
``vm_initialization``, ``tvm_ffi.from_dlpack``), as ``tvm.runtime.vm.VirtualMachine`` does, and:

- loads ``libtvm_runtime.so`` from the installed apache-tvm package (found with
  ``importlib.util.find_spec``, which does not import it), ``RTLD_GLOBAL`` as ``tvm.base`` does,
  so a later ``import tvm`` in the same process (a compile after a load) finds it loaded and adds
  the compiler as usual;
- imports ``tvm_ffi`` with torch hidden when torch is not imported yet: tvm_ffi then skips its
  torch fast paths for the life of the process (torch tensors still pass through DLPack's
  ``__dlpack__``, as numpy arrays do). When torch is already imported nothing is hidden. ml_dtypes
  likewise (``HIDDEN_FROM_TVM_FFI``; tvm_ffi imports it optionally, for numpy bfloat16/float8 dtype
  objects, which an artifact's tensors never are: about 7 MB of RSS, issue 22.3); a later ``import tvm``
  imports it for TVM's own conversions (bfloat16 arrays to and from TVM tensors still work: session 12).

Measured on this machine (issue 22): ``import tvm`` 400 MB RSS (torch 200 MB + the compiler
library ~160 MB), ``TVM_USE_RUNTIME_LIB=1 import tvm`` 297 MB (torch still imported by tvm_ffi),
this module about 40 MB.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from slmc.artifact.library_blob import release_library_blob
from slmc.errors import ArtifactError

DLPACK_CPU = 1  # DLPack's kDLCPU; a device of an RPC session has another type (the session is encoded in it)
HIDDEN_FROM_TVM_FFI = ("torch", "ml_dtypes")  # optional imports of tvm_ffi that running an artifact does not use
POOLED_ALLOCATOR = 2  # tvm.runtime.vm.VirtualMachine.POOLED_ALLOCATOR, its default
TVM_ALIGNMENT = 64  # bytes; TVM accepts (DLPack) only buffers aligned like its own allocations (kAllocAlignment)
RUNTIME_LIBRARY = "libtvm_runtime.so"


def tvm_ffi() -> Any:
    """The ``tvm_ffi`` module, imported without torch and ml_dtypes if they are not imported yet (module docstring)."""
    if "tvm_ffi" in sys.modules:
        return sys.modules["tvm_ffi"]
    hidden = [name for name in HIDDEN_FROM_TVM_FFI if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # `import torch` raises ImportError meanwhile
    try:
        import tvm_ffi as module
    finally:
        for name in hidden:
            del sys.modules[name]
    return module


_loaded: list[Any] = []  # the runtime library's handle, once loaded
_configured = threading.local()  # .threads: the pool size use_physical_cores gave this thread's TVM pool
_process_threads: list[int] = []  # the pool size use_physical_cores chose first in this process, kept for every thread
AFFINITY_BIG = 1  # TVM's ThreadGroup::kBig (threading_backend.h): the affinity mode its pool starts with
CPU_TOPOLOGY = Path("/sys/devices/system/cpu")  # cpuN/topology/thread_siblings_list: cpuN's SMT threads, e.g. "0,2"


def _cpu_set(cpu_list: str) -> frozenset[int]:
    """The CPUs of a Linux CPU list such as ``0-1,4``."""
    ranges = [part.split("-") for part in cpu_list.strip().split(",") if part]
    return frozenset(cpu for r in ranges for cpu in range(int(r[0]), int(r[-1]) + 1))


def physical_cores(cpus: Iterable[int] | None = None, topology: Path = CPU_TOPOLOGY) -> int:
    """The physical cores among ``cpus`` (default: the CPUs the calling thread may run on): CPUs with the same
    ``thread_siblings_list`` (SMT threads of one core) count once, a CPU without one as a core of its own.

    Counted per CPU, not as ``len(cpus) / cpu0's siblings``: a mask holding one thread of each of two cores is
    two cores, not one. Such masks are common: ``taskset -c 0,1`` on a 2-way SMT machine that numbers siblings
    ``n`` and ``n + cores``, and the mask TVM's pool gives the thread that starts it (the pool's first CPUs),
    which every thread started from that one inherits."""
    if cpus is not None:
        usable = cpus
    else:
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in usable:
        siblings = topology / f"cpu{cpu}" / "topology" / "thread_siblings_list"
        cores.add(_cpu_set(siblings.read_text()) if siblings.is_file() else frozenset({cpu}))
    return max(len(cores), 1)


def tvm_threads() -> int:
    """The workers of the calling thread's TVM pool (``runtime.NumThreads``; loads the runtime library and sizes
    the pool first, ``use_physical_cores``). TVM's pools are per thread; a count set through
    ``runtime.config_threadpool`` without a CPU list can report more workers than kernels use (``set_pool_threads``)."""
    _load_runtime_library()
    return int(tvm_ffi().get_global_func("runtime.NumThreads")())


def user_chose_threads() -> bool:
    """Whether the environment sets TVM's thread count (``TVM_NUM_THREADS``, else ``OMP_NUM_THREADS``: TVM 0.27's
    ``MaxConcurrency`` reads them in that order)."""
    return "TVM_NUM_THREADS" in os.environ or "OMP_NUM_THREADS" in os.environ


def use_physical_cores() -> None:
    """Size the calling thread's TVM thread pool to the physical cores unless the user chose
    (``user_chose_threads``). TVM 0.27 otherwise takes ``hardware_concurrency() / 2`` on x86, assuming two
    hyper-threads per core: on a machine without SMT that is half the cores (this 2-core machine: one
    thread, SmolLM-135M int4 decode ~11 vs ~5.5 ms per token; docs/dev-notes.md session 9).

    Through ``set_pool_threads`` (``runtime.config_threadpool``, TVM 0.27 src/runtime/thread_pool.cc): it sets
    the calling thread's ``MaxConcurrency`` and starts that thread's pool with ``AFFINITY_BIG``, the mode TVM's
    pool starts with, so the workers are placed as with ``TVM_NUM_THREADS``. It cannot grow a
    pool TVM already started in that thread (TVM 0.27 fixes a pool's workers when it builds it, from
    ``MaxConcurrency`` then): ``tvm_threads`` then reports the smaller pool. Nothing is written to
    ``os.environ``: a child process sees the environment the user gave (setting ``TVM_NUM_THREADS`` here
    made every child look user-configured). Both the count and the pool are per thread in TVM, so each
    thread that runs a model calls this (once: then it returns at once), with the count the process's first
    call chose (TVM pins the thread whose pool it starts to the pool's CPUs, and threads started from it
    inherit that mask: counted again there it could be fewer); ``tvm_threads`` reads the result.
    Precondition: the runtime library is loaded."""
    if getattr(_configured, "threads", None) is not None or user_chose_threads():
        return
    count = default_pool_threads()
    set_pool_threads(count)
    _configured.threads = count


def default_pool_threads() -> int:
    """The TVM pool size ``use_physical_cores`` gives every thread: ``physical_cores()`` as counted by the
    process's first call, kept (a thread TVM has pinned, or one started from it, could count fewer)."""
    if not _process_threads:
        _process_threads.append(physical_cores())
    return _process_threads[0]


def set_pool_threads(count: int) -> None:
    """Run the calling thread's parallel TVM kernels on ``count`` threads (``count >= 1``):
    ``runtime.config_threadpool(AFFINITY_BIG, count, cpus)`` with a list of ``count`` CPUs.

    The list's length is what sets the thread's ``MaxConcurrency`` (TVM 0.27 ``threading::Configure`` calls
    ``SetMaxConcurrency(cpus.size())``; in ``AFFINITY_BIG`` mode the ids themselves are not read: TVM places the
    workers by its own CPU order). Without a list TVM resets it to its default (``TVM_NUM_THREADS``, else
    ``OMP_NUM_THREADS``, else half the hardware threads on x86) and ``TVMBackendParallelLaunch`` runs every
    parallel kernel inline on the calling thread when that default is 1, whatever ``runtime.NumThreads`` says:
    ``config_threadpool(1, 2)`` on this 2-core machine reports 2 threads and runs on one (session 11: 20 runs of a
    parallel kernel took the calling thread 44 CPU ticks, against 24 + 22 over two threads with a list). The ids
    are not read from the thread's affinity either: TVM pins the thread whose pool it configures to the pool's
    CPUs (one CPU after ``count`` 1), so a list taken from it could not grow again. Cannot grow a pool TVM
    already started in this thread with fewer workers (``use_physical_cores``). Precondition: the runtime
    library is loaded."""
    tvm_ffi().get_global_func("runtime.config_threadpool")(AFFINITY_BIG, count, [str(c) for c in range(count)])


def _load_runtime_library() -> None:
    """``libtvm_runtime.so`` of the installed apache-tvm, loaded once (already loaded if ``tvm`` is imported),
    and the calling thread's TVM pool on the physical cores (``use_physical_cores``)."""
    _load_library()
    use_physical_cores()


def _load_library() -> None:
    if _loaded or "tvm" in sys.modules:
        return
    tvm_ffi()  # libtvm_ffi.so first: the runtime library links against it
    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        raise ArtifactError("running an artifact needs TVM's runtime library: the apache-tvm package is not installed")
    lib_dir = Path(next(iter(spec.submodule_search_locations))) / "lib"
    from tvm_ffi.libinfo import load_lib_ctypes

    try:
        _loaded.append(load_lib_ctypes("tvm", "tvm_runtime", "RTLD_GLOBAL", extra_lib_paths=[lib_dir]))
    except (RuntimeError, OSError) as exc:
        raise ArtifactError(f"could not load TVM's runtime library {lib_dir / RUNTIME_LIBRARY}: {exc}") from exc


def cpu() -> Any:
    """The local CPU as a TVM device."""
    _load_runtime_library()
    return tvm_ffi().device("cpu", 0)


def load_vm(library: Path, device: Any) -> Any:
    """The Relax VM of the compiled library ``library`` on the local ``device`` (pooled allocator,
    as ``tvm.runtime.vm.VirtualMachine(module, device)``); ``vm["main"]`` is the compiled function."""
    _load_runtime_library()
    module = tvm_ffi().load_module(str(library))
    vm = module["vm_load_executable"]()
    vm["vm_initialization"](device.dlpack_device_type(), device.index, POOLED_ALLOCATOR)
    release_library_blob(library)  # deserialized: its pages are a second copy (slmc.artifact.library_blob)
    return vm


def aligned_empty(shape: tuple[int, ...], dtype: Any, *, zeroed: bool = False) -> Any:
    """A C-contiguous numpy array whose data starts on a ``TVM_ALIGNMENT`` boundary: uninitialized, or
    ``zeroed`` through ``np.zeros`` (calloc: a large array's pages are the system's zero pages until
    written, so an array reserved for a long context costs resident memory only for what is used)."""
    import numpy as np

    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = (np.zeros if zeroed else np.empty)(nbytes + TVM_ALIGNMENT, dtype=np.uint8)
    return np.ndarray(shape, dtype, buffer=raw, offset=-raw.ctypes.data % TVM_ALIGNMENT)  # aligned even when empty


def as_local_tensor(array: Any) -> Any:
    """A TVM tensor of the CPU numpy ``array``: a view when TVM can take it as it is (C-contiguous,
    writeable, 64-byte aligned, not empty), else a view of an aligned copy."""
    ffi = tvm_ffi()
    if array.size and array.flags.c_contiguous and array.flags.writeable and array.ctypes.data % TVM_ALIGNMENT == 0:
        return ffi.from_dlpack(array, require_alignment=TVM_ALIGNMENT)
    copy = aligned_empty(array.shape, array.dtype)
    copy[...] = array
    return ffi.from_dlpack(copy, require_alignment=TVM_ALIGNMENT)
