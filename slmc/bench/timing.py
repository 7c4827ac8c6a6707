"""Timing inside one engine process: what every engine's timer answers, and the step-function timer.

A ``Timer`` (one per engine process) times ``decode_ms(context, steps)``: ``steps`` single-token steps
after a cache of ``context`` positions (each from the same cache, so every sample sees that length;
random cache contents: a step costs the same whatever they hold), and ``prefill_s(tokens, repeats)``:
a prompt of ``tokens`` ids from the empty cache, including the argmax of its last logits (the time to
the first token). One untimed call of each shape comes first (first calls allocate). With ``evict_bytes``
(``slmc bench --evict-llc``) a buffer of that size is written before each timed decode step, untimed
(``slmc.bench.evict``): cold-cache samples. ``peak_rss_mb``
is the engine process's high-water resident set (``VmHWM`` of /proc/self/status, else
``getrusage``'s ``ru_maxrss``). ``StepTimer`` serves every engine that runs the causal-LM cache
contract (``slmc.graph.kv_cache``) as a numpy step function.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from slmc.bench.evict import Evictor
from slmc.graph.kv_cache import KVCacheSpec

Logits = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
PROMPT_ID_RANGE = 64  # prompt ids (i * 7 + 1) mod 64: every bench vocabulary holds them (slmc-run uses the same)


class Timer(Protocol):
    threading: dict[str, Any]

    def decode_ms(self, context: int, steps: int, evict_bytes: int = 0) -> list[float]: ...

    def prefill_s(self, tokens: int, repeats: int) -> list[float]: ...

    def peak_rss_mb(self) -> float: ...


@runtime_checkable
class MemoryRuns(Protocol):
    """A timer whose runs report the terms of a memory bound (the native runner: issue 18's peak RSS <= weights
    file + KV cache at the context used + an allowance), one entry per run: ``context`` (tokens in the cache at
    the end), ``peak_rss_bytes``, ``weights_file_bytes``, ``kv_cache_bytes`` (the context used, the sink included)
    and ``kv_cache_huge_pages``."""

    def memory_runs(self) -> list[dict[str, Any]]: ...


@runtime_checkable
class GrowthProbe(Protocol):
    """A timer that can generate token after token and report its process's resident memory on the way
    (issue 22: no per-step growth): ``rss_growth(first, last)`` -> ``first`` and ``last`` (tokens in the cache),
    ``rss_first_bytes`` and ``rss_last_bytes`` (VmRSS after that many) and ``kv_written_bytes`` (the cache
    bytes written in between, whose pages become resident as they are written)."""

    def rss_growth(self, first: int, last: int) -> dict[str, int]: ...


def rss_bytes() -> int:
    """This process's resident set now (VmRSS), in bytes."""
    with open("/proc/self/status", encoding="utf-8") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def bench_prompt(tokens: int) -> np.ndarray:
    return ((np.arange(tokens, dtype=np.int64) * 7 + 1) % PROMPT_ID_RANGE).reshape(1, tokens)


def peak_rss_mb() -> float:
    """This process's peak resident set in MB (VmHWM)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def aligned(array: np.ndarray, alignment: int = 64) -> np.ndarray:
    """A copy of ``array`` starting on an ``alignment``-byte boundary: what a decode loop feeds back
    (the cache an engine returned last step; slmc's runtime then shares it without a copy, torch
    and ONNX Runtime take any numpy array without one)."""
    raw = np.empty(array.nbytes + alignment, np.uint8)
    offset = -raw.ctypes.data % alignment
    out = raw[offset:offset + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_samples(sample: Callable[[], Any], steps: int, evict_bytes: int = 0,
                 before: Callable[[], Any] | None = None) -> list[float]:
    """Milliseconds of ``steps`` timed calls of ``sample`` after one untimed warm-up call; ``before`` (untimed) runs
    before every call, then, with ``evict_bytes``, the eviction write (``slmc.bench.evict``, untimed)."""
    evictor = Evictor(evict_bytes) if evict_bytes else None
    samples = []
    for _ in range(steps + 1):
        if before is not None:
            before()
        if evictor is not None:
            evictor.evict()
        samples.append(1e3 * timed(sample))
    return samples[1:]


class StepTimer:
    """Times ``logits(ids, keys, values)`` under the cache contract of ``cache``."""

    def __init__(self, logits: Logits, cache: KVCacheSpec, threading: dict[str, Any]):
        self.logits, self.cache, self.threading = logits, cache, threading

    def decode_ms(self, context: int, steps: int, evict_bytes: int = 0) -> list[float]:
        rng = np.random.default_rng(context)
        shape = (self.cache.layers, 1, self.cache.kv_heads, context + 1, self.cache.head_dim)  # + the sink slot
        keys, values = (aligned(rng.standard_normal(shape).astype(np.float32)) for _ in range(2))
        one = bench_prompt(1)
        return step_samples(lambda: self.logits(one, keys, values), steps, evict_bytes)

    def prefill_s(self, tokens: int, repeats: int) -> list[float]:
        ids = bench_prompt(tokens)
        keys, values = self.cache.empty()
        first = lambda: int(np.argmax(self.logits(ids, keys, values)[0, -1]))  # noqa: E731
        first()
        return [timed(first) for _ in range(repeats)]

    def peak_rss_mb(self) -> float:
        return peak_rss_mb()
