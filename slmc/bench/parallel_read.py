"""A read-only memory stream on one thread and on ``threads``: a TVM-built parallel reduction (issue 22's bound).

A decode step streams its weights with every thread the engine runs, so the memory roof it is judged against
must be what those threads read together (Williams et al., "Roofline", CACM 2009: the roof is the bandwidth
the machine sustains; McCalpin's STREAM, 1995, measures it with all threads). The kernel: a buffer of
``uint32`` viewed as ``[slices, rows, LANES]``; ``out[s, l]`` is the wrap-around sum of ``buffer[s, :, l]``.
Its slice loop is TVM ``parallel`` (one slice per worker of TVM's thread pool), the rows loop is the reduction
and the ``LANES`` loop (64 ``uint32``: 256 bytes, four AVX-512 registers of independent sums) is vectorized, so
every byte is loaded once, in order, with vector loads and one add each: nothing but the loads can bound it.
The one-thread figure runs the same buffer as a single slice (``[1, slices * rows, LANES]``) without a
parallel loop. ``checksum``: the kernel's sums, equal to numpy's (every byte was read).

Why this reader (docs/dev-notes.md, session 12): numpy reductions in Python threads release the GIL and read
the DRAM set about as fast, but each call starts or wakes Python threads (tens of microseconds), which an LLC
set (8 MiB: ~40 us at 200 GB/s) cannot hide; TVM's pool is already running, and TVM is a dependency (a C
compiler is not). The kernel is compiled for the host (``llvm`` with ``mcpu`` from LLVM's host CPU name) in a
fraction of a second.

``measure`` runs in a process of its own (``slmc.bench.child``, task ``read``): TVM pins the thread whose pool
it configures to the pool's CPUs, and the bench's parent starts the engine processes, which would inherit
that mask.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from slmc.bench.machine import best_seconds

LANES = 64  # uint32 sums per slice: 256 bytes, four AVX-512 (eight AVX2) registers
WORD_BYTES = 4
METHOD = ("TVM-built read-only reduction (uint32 sums, 256-byte vector rows; slmc.bench.parallel_read), "
          "one thread and one slice per pool thread")


def rows_per_slice(set_bytes: int, slices: int) -> int:
    """Rows of ``LANES`` words per slice so that ``slices`` slices fill at most ``set_bytes`` (at least one)."""
    return max(1, set_bytes // (slices * LANES * WORD_BYTES))


@functools.cache
def build(slices: int) -> Any:
    """The reduction over ``[slices, rows, LANES]`` (``rows`` symbolic) compiled for this host, once per process;
    ``slices`` 1: no parallel loop. Returns the callable ``f(buffer, out)`` (TVM tensors, ``out`` ``[slices, LANES]``)."""
    import tvm
    from tvm import s_tir, te

    rows = te.var("rows")
    buffer = te.placeholder((slices, rows, LANES), "uint32", name="buffer")
    k = te.reduce_axis((0, rows), name="k")
    out = te.compute((slices, LANES), lambda s, lane: te.sum(buffer[s, k, lane], axis=k), name="lane_sums")
    sch = s_tir.Schedule(te.create_prim_func([buffer, out]))
    block = sch.get_sblock("lane_sums")
    s, lane, row = sch.get_loops(block)
    sch.reorder(s, row, lane)
    if slices > 1:
        sch.parallel(s)
    sch.vectorize(lane)
    target = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": slices})
    return tvm.compile(sch.mod, target=target)


def _tensor(shape: tuple[int, ...]) -> tuple[Any, np.ndarray]:
    """A TVM tensor and a numpy view of the same (64-byte aligned) memory."""
    import tvm

    tensor = tvm.runtime.empty(shape, "uint32")
    return tensor, np.from_dlpack(tensor)


def checksum(words: np.ndarray, slices: int) -> np.ndarray:
    """The kernel's result over ``words`` (``uint32``, ``slices * rows * LANES`` of them), computed by numpy:
    each lane's wrap-around sum per slice, ``[slices, LANES]``."""
    return words.reshape(slices, -1, LANES).sum(axis=1, dtype=np.uint32)


def run_kernel(words: np.ndarray, slices: int) -> np.ndarray:
    """The kernel of ``slices`` slices over ``words`` (copied into a TVM tensor; for tests); its ``[slices, LANES]``."""
    kernel, rows = build(slices), words.size // (slices * LANES)
    buffer, view = _tensor((slices, rows, LANES))
    view[...] = words.reshape(slices, rows, LANES)
    out, result = _tensor((slices, LANES))
    kernel(buffer, out)
    return result.copy()


def stream(set_bytes: int, threads: int, repeats: int) -> dict[str, float]:
    """Read bandwidth in GB/s over a buffer of (at most) ``set_bytes``, best of ``repeats`` after a warm-up call
    (code, pool and pages: ``machine.best_seconds``):
    ``"1"`` on one thread, ``str(threads)`` on ``threads`` (one slice each), the same memory both times.
    Precondition: this thread's TVM pool has ``threads`` workers (``measure`` sets it)."""
    import tvm

    rows = rows_per_slice(set_bytes, threads)
    buffer, view = _tensor((threads, rows, LANES))
    view.fill(1)  # every page written before it is timed
    nbytes = threads * rows * LANES * WORD_BYTES
    figures = {}
    for count in sorted({1, threads}):
        # one slice: the same memory as [1, threads * rows, LANES] (a numpy view handed back without a copy)
        shaped = buffer if count == threads else tvm.runtime.from_dlpack(view.reshape(1, threads * rows, LANES))
        out, _ = _tensor((count, LANES))
        figures[str(count)] = nbytes / best_seconds(functools.partial(build(count), shaped, out), repeats) / 1e9
    return figures


def measure(sets: dict[str, int], threads: int, repeats: dict[str, int]) -> dict[str, Any]:
    """``stream`` over each named set (``{"dram": bytes, "llc": bytes}``) with ``repeats[name]`` samples, on a TVM
    pool of ``threads`` workers: ``{name: {"1": GB/s, str(threads): GB/s}, "threads": threads, "method": ...}``."""
    from slmc.artifact import tvm_runtime

    import tvm  # noqa: F401  (loads the runtime library before the pool is configured)

    tvm_runtime.set_pool_threads(threads)
    return {**{name: stream(size, threads, repeats[name]) for name, size in sets.items()}, "threads": threads,
            "method": METHOD}
