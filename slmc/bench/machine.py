"""The machine a benchmark runs on: roofline bounds measured at the start, and load before/after.

Memory bandwidth, two ways: STREAM's triad ``a = b + s * c`` (McCalpin, "Memory Bandwidth and Machine
Balance in Current High Performance Computers", 1995) on float32 arrays, one thread, best of ``repeats``;
and a read-only stream (``read_bandwidth``: an fp32 GEMV on one thread and on the benchmark's threads).
Each is measured twice (``describe``), over working sets sized from the last level cache (``slmc.bench.llc``):
a DRAM set (>= 4x the LLC) and an LLC set (a quarter of it). Issue 22's decode goal divides by the larger
DRAM figure (``bandwidth_gbs``); the LLC figure (``llc_bandwidth_gbs``) is reported beside it. GEMM peak:
an fp32 ``torch.matmul`` of two square matrices with the benchmark's thread count, 2 n^3 flops,
best of ``repeats``. Bounds (Williams et al., "Roofline", CACM 2009): a decode step must at least
read every weight once (memory bound), a prefill must at least do its matmul flops (compute bound).
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import numpy as np

from slmc.bench import llc


TRIAD_ARRAYS = 3  # a, b, c
GEMV_COLUMNS = 4096
LLC_REPEATS = 50  # an LLC set streams in about a millisecond: more samples for its best
DRAM_REPEATS = 3  # a DRAM set (>= 1 GiB) streams for 50-100 ms: each sample is long enough


def triad_elements(set_bytes: int) -> int:
    """float32 elements per triad array so that its three arrays fill ``set_bytes``."""
    return max(1, set_bytes // (TRIAD_ARRAYS * 4))


def gemv_rows(set_bytes: int) -> int:
    """Rows of a ``GEMV_COLUMNS``-wide float32 matrix of ``set_bytes`` (at least one)."""
    return max(1, set_bytes // (GEMV_COLUMNS * 4))


def memory_bandwidth(elements: int = 32 * 2**20, repeats: int = 5) -> float:
    """Triad bandwidth in GB/s (numpy, one thread)."""
    b = np.ones(elements, dtype=np.float32)
    c = np.ones(elements, dtype=np.float32)
    a = np.empty_like(b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.multiply(c, np.float32(3.0), out=a)
        np.add(a, b, out=a)
        best = min(best, time.perf_counter() - start)
    # multiply + add in place: reads c, writes a, reads a and b, writes a -> 5 x 4 bytes per element
    return 5 * 4 * elements / best / 1e9


def read_bandwidth(threads: int, rows: int = 16384, columns: int = 4096, repeats: int = 5) -> float:
    """Read-only bandwidth in GB/s: an fp32 matrix-vector product (``torch.mv``, a GEMV as a decode step runs
    them) over a ``rows x columns`` matrix (256 MB by default; ``describe`` sizes it by ``slmc.bench.llc``), counting the matrix's
    bytes, best of ``repeats`` on one thread and on ``threads`` (the machine's bound, whichever streams more).
    A decode step streams its weights in and writes only activations; the triad (one numpy thread, whose
    writes also cost a read for ownership) under-states what reads alone stream. (``torch.sum`` was tried
    first: slower than this GEMV, its reduction is not purely memory-bound.)"""
    import torch

    before = torch.get_num_threads()
    matrix, vector = torch.ones(rows, columns, dtype=torch.float32), torch.ones(columns, dtype=torch.float32)
    best = float("inf")
    try:
        for count in sorted({1, threads}):
            torch.set_num_threads(count)
            best = min(best, _best_seconds(lambda: torch.mv(matrix, vector), repeats))
    finally:
        torch.set_num_threads(before)
    return 4 * rows * columns / best / 1e9


def _best_seconds(run: Any, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``run``, after one untimed warm-up call."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def bandwidth_gbs(bounds: dict[str, Any]) -> float:
    """The bandwidth of the decode roofline: the larger of the triad and the read-only stream measured over the
    DRAM set (the machine streams at least that, so the bound is the stricter of the two; ``describe``'s keys)."""
    return max(bounds["memory_bandwidth_gbs"], bounds.get("read_bandwidth_gbs", 0.0))


def llc_bandwidth_gbs(bounds: dict[str, Any]) -> float | None:
    """The same over the LLC set (``None`` for a report written before it was measured)."""
    measured = [bounds[k] for k in ("llc_triad_bandwidth_gbs", "llc_read_bandwidth_gbs") if k in bounds]
    return max(measured) if measured else None


def gemm_peak(threads: int, n: int = 1024, repeats: int = 5) -> float:
    """fp32 matmul GFLOP/s with ``threads`` torch threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(n, n)
        y = torch.randn(n, n)
        best = _best_seconds(lambda: torch.matmul(x, y), repeats)
    finally:
        torch.set_num_threads(before)
    return 2 * n**3 / best / 1e9


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load() -> dict[str, float]:
    one, five, fifteen = os.getloadavg()
    return {"load1": round(one, 2), "load5": round(five, 2), "load15": round(fifteen, 2)}


def loaded(before: dict[str, float], after: dict[str, float], threads: int) -> bool:
    """Other work competed for the cores: the 1-minute load was above half the cores before the run,
    or above the benchmark's own threads plus half the cores after it."""
    n = cores()
    return before["load1"] > 0.5 * n or after["load1"] > threads + 0.5 * n


def describe(threads: int) -> dict[str, Any]:
    """Machine facts plus the measured roofline: the last level cache and the working sets sized from it
    (``slmc.bench.llc``), the triad and read-only bandwidths over the DRAM set (``memory_bandwidth_gbs``,
    ``read_bandwidth_gbs``) and over the LLC set (``llc_triad_bandwidth_gbs``, ``llc_read_bandwidth_gbs``), the
    eviction buffer's size, and the GEMM peak; ``bandwidth_seconds``: what the four bandwidth measurements took."""
    cache = llc.last_level_cache()
    sets = llc.working_sets(cache.bytes, llc.available_bytes())
    start = time.perf_counter()
    measured = {
        "memory_bandwidth_gbs": round(memory_bandwidth(triad_elements(sets.dram_bytes), DRAM_REPEATS), 2),
        "read_bandwidth_gbs": round(read_bandwidth(threads, gemv_rows(sets.dram_bytes), GEMV_COLUMNS, DRAM_REPEATS), 2),
        "llc_triad_bandwidth_gbs": round(memory_bandwidth(triad_elements(sets.llc_bytes), LLC_REPEATS), 2),
        "llc_read_bandwidth_gbs": round(read_bandwidth(threads, gemv_rows(sets.llc_bytes), GEMV_COLUMNS, LLC_REPEATS), 2),
    }
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cores": cores(),
        "threads": threads,
        **cache.to_json(), **sets.to_json(), **measured,
        "bandwidth_seconds": round(time.perf_counter() - start, 1),
        "eviction_bytes": llc.eviction_bytes(cache.bytes),
        "gemm_peak_gflops": round(gemm_peak(threads), 2),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return platform.machine()
    return platform.machine()
