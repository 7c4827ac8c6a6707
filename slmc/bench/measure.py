"""One engine's measurement, in a process of its own (``slmc.bench.child``): open, time, peak RSS."""

from __future__ import annotations

import time
from typing import Any

from slmc.bench.engines import engine
from slmc.bench.thread_policy import from_json
from slmc.bench.timing import GrowthProbe, MemoryRuns


def measure(engine_name: str, info: dict[str, Any], policy: dict[str, Any], contexts: list[int], prefills: list[int],
            steps: int, prefill_repeats: int, growth: list[int] | None = None, evict_bytes: int = 0) -> dict[str, Any]:
    """Decode ms samples per context, prefill second samples per prompt length, threads, peak RSS (and, for a
    timer that reports them, each run's memory terms: ``slmc.bench.timing.MemoryRuns``; and with ``growth``
    ``[first, last]`` the RSS of a generation after ``first`` and ``last`` tokens: ``GrowthProbe``, run first).
    With ``evict_bytes``, ``decode_cold_ms``: the decode samples once more with the LLC evicted before each step
    (``slmc.bench.evict``), taken last, after the peak RSS was read (the eviction buffer is not the engine's)."""
    start = time.perf_counter()
    timer = engine(engine_name).open(info, from_json(policy))
    open_seconds = time.perf_counter() - start
    # first, on a cache none of whose pages were written yet: the KV bytes it writes are the pages it adds
    grown = timer.rss_growth(*growth) if growth and isinstance(timer, GrowthProbe) else None
    decode = {str(c): timer.decode_ms(c, steps) for c in contexts}
    prefill = {str(p): timer.prefill_s(p, prefill_repeats) for p in prefills}
    peak = timer.peak_rss_mb()
    cold = {str(c): timer.decode_ms(c, steps, evict_bytes) for c in contexts} if evict_bytes else None
    return {"decode_ms": decode, "prefill_s": prefill, "threading": timer.threading, "peak_rss_mb": peak,
            "open_seconds": round(open_seconds, 2), "decode_cold_ms": cold,
            "memory_runs": timer.memory_runs() if isinstance(timer, MemoryRuns) else [], "rss_growth": grown}
