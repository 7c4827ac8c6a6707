"""The machine a benchmark runs on: roofline bounds measured at the start, and load before/after.

Memory bandwidth, three figures: STREAM's triad ``a = b + s * c`` (McCalpin, "Memory Bandwidth and Machine
Balance in Current High Performance Computers", 1995) on float32 arrays, one numpy thread, best of ``repeats``;
and a read-only stream (``slmc.bench.parallel_read``: a TVM-built vectorized reduction, in a process of its
own) on one thread and on the benchmark's threads (``read_threads``: the common policy's, else one per
physical core, the threads the engines take by default). Each is measured twice (``describe``), over working
sets sized from the last level cache (``slmc.bench.llc``): a DRAM set (>= 4x the LLC) and an LLC set (a quarter
of it). Issue 22's decode goal divides by the largest DRAM figure (``bandwidth_gbs``; ``bandwidth_bound`` names
it); the LLC's largest (``llc_bandwidth_gbs``, ``llc_bandwidth_bound``) is reported beside it. Until session 12
the read-only figure was an fp32 GEMV (``torch.mv``, best of one thread and the run's: ``read_bandwidth_gbs`` in
older reports), which read slower than the triad here. GEMM peak: an fp32 ``torch.matmul`` of two square
matrices with the benchmark's thread count, 2 n^3 flops, best of ``repeats``. Bounds (Williams et al.,
"Roofline", CACM 2009): a decode step must at least read every weight once (memory bound), a prefill must at
least do its matmul flops (compute bound).
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import numpy as np

from slmc.bench import llc


TRIAD_ARRAYS = 3  # a, b, c
LLC_REPEATS = 50  # an LLC set streams in about a millisecond: more samples for its best
DRAM_REPEATS = 3  # a DRAM set (>= 1 GiB) streams for 50-100 ms: each sample is long enough


def triad_elements(set_bytes: int) -> int:
    """float32 elements per triad array so that its three arrays fill ``set_bytes``."""
    return max(1, set_bytes // (TRIAD_ARRAYS * 4))


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


def best_seconds(run: Any, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``run``, after one untimed warm-up call."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


# The DRAM figures the bound is the largest of, in the order a tie is named by: the triad, the read-only stream
# on one thread and on the run's threads, and (reports before session 12) the GEMV read.
DRAM_FIGURES = ("memory_bandwidth_gbs", "read_1t_bandwidth_gbs", "read_nt_bandwidth_gbs", "read_bandwidth_gbs")
LLC_FIGURES = ("llc_triad_bandwidth_gbs", "llc_read_1t_bandwidth_gbs", "llc_read_nt_bandwidth_gbs", "llc_read_bandwidth_gbs")


def bound_figure(bounds: dict[str, Any], figures: tuple[str, ...] = DRAM_FIGURES) -> str | None:
    """The key of the largest of ``figures`` in ``bounds`` (``describe``'s keys; the first on a tie), ``None``
    when none was measured."""
    present = [k for k in figures if k in bounds]
    return max(present, key=lambda k: bounds[k]) if present else None


def bandwidth_gbs(bounds: dict[str, Any]) -> float:
    """The bandwidth of the decode roofline: the largest DRAM figure (triad; read-only on one thread and on the
    run's threads): the machine streams at least that, so the bound is the strictest of them."""
    return bounds[bound_figure(bounds)]


def llc_bandwidth_gbs(bounds: dict[str, Any]) -> float | None:
    """The same over the LLC set (``None`` for a report written before it was measured)."""
    key = bound_figure(bounds, LLC_FIGURES)
    return bounds[key] if key else None


def read_streams(sets: llc.WorkingSets, threads: int) -> dict[str, Any]:
    """The read-only stream's figures (``slmc.bench.parallel_read``) over both sets, in a child process (TVM pins
    the thread whose pool it sizes, and a mask set in this process would be inherited by the engines' processes),
    with this process's environment (the pool is sized explicitly, whatever ``TVM_NUM_THREADS`` says)."""
    from slmc.bench.child import run_child

    got = run_child("read", {"sets": {"dram": sets.dram_bytes, "llc": sets.llc_bytes}, "threads": threads,
                             "repeats": {"dram": DRAM_REPEATS, "llc": LLC_REPEATS}}, env=dict(os.environ), quiet=True)
    n = str(threads)
    return {"read_1t_bandwidth_gbs": round(got["dram"]["1"], 2), "read_nt_bandwidth_gbs": round(got["dram"][n], 2),
            "llc_read_1t_bandwidth_gbs": round(got["llc"]["1"], 2), "llc_read_nt_bandwidth_gbs": round(got["llc"][n], 2),
            "read_threads": threads, "read_method": got["method"]}


def gemm_peak(threads: int, n: int = 1024, repeats: int = 5) -> float:
    """fp32 matmul GFLOP/s with ``threads`` torch threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(n, n)
        y = torch.randn(n, n)
        best = best_seconds(lambda: torch.matmul(x, y), repeats)
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
    (``slmc.bench.llc``); over the DRAM set the triad (``memory_bandwidth_gbs``, one thread) and the read-only
    stream on one thread and on ``threads`` (``read_1t_bandwidth_gbs``, ``read_nt_bandwidth_gbs``; ``read_threads``,
    ``read_method``), the same over the LLC set (``llc_triad_bandwidth_gbs``, ``llc_read_1t_bandwidth_gbs``,
    ``llc_read_nt_bandwidth_gbs``), which figure each bound is (``bandwidth_bound``, ``llc_bandwidth_bound``), the
    eviction buffer's size, and the GEMM peak; ``bandwidth_seconds``: what the bandwidth measurements took."""
    cache = llc.last_level_cache()
    sets = llc.working_sets(cache.bytes, llc.available_bytes())
    start = time.perf_counter()
    measured = {
        "memory_bandwidth_gbs": round(memory_bandwidth(triad_elements(sets.dram_bytes), DRAM_REPEATS), 2),
        "llc_triad_bandwidth_gbs": round(memory_bandwidth(triad_elements(sets.llc_bytes), LLC_REPEATS), 2),
        **read_streams(sets, threads),
    }
    measured.update(bandwidth_bound=bound_figure(measured), llc_bandwidth_bound=bound_figure(measured, LLC_FIGURES))
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
