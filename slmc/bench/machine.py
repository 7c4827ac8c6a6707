"""The machine a benchmark runs on: roofline bounds measured at the start, and load before/after.

Memory bandwidth, two ways: STREAM's triad ``a = b + s * c`` (McCalpin, "Memory Bandwidth and Machine
Balance in Current High Performance Computers", 1995) on float32 arrays far larger than the last
level cache, one thread, best of ``repeats``; and a read-only stream (``read_bandwidth``: a sum on the
benchmark's threads), the bound issue 22's decode goal uses (a decode step reads, on every thread). GEMM peak:
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


def read_bandwidth(threads: int, elements: int = 64 * 2**20, repeats: int = 5) -> float:
    """Read-only bandwidth in GB/s: ``torch.sum`` of a float32 array far larger than the last level cache on
    ``threads`` threads, 4 bytes per element read, best of ``repeats``. What a decode step does: it streams
    its weights in (writing only activations), on all its threads; the triad (one numpy thread, and its
    writes cost a read for ownership besides the counted write) under-states that."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.ones(elements, dtype=torch.float32)
        torch.sum(x)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.sum(x)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return 4 * elements / best / 1e9


def gemm_peak(threads: int, n: int = 1024, repeats: int = 5) -> float:
    """fp32 matmul GFLOP/s with ``threads`` torch threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(n, n)
        y = torch.randn(n, n)
        torch.matmul(x, y)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.matmul(x, y)
            best = min(best, time.perf_counter() - start)
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
    """Machine facts plus the measured roofline."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cores": cores(),
        "threads": threads,
        "memory_bandwidth_gbs": round(memory_bandwidth(), 2),
        "read_bandwidth_gbs": round(read_bandwidth(threads), 2),
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
