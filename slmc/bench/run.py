"""One benchmark run: roofline and load, then every engine timed interleaved on every model.

Per model, every engine is set up first, then ``rounds`` rounds run; each round times, engine by
engine, a prefill of ``prefill`` tokens from the empty cache (its wall time including the argmax
is the time to first token) and one decode step after a cache of each length in ``contexts``
(random cache contents: the cost of a step does not depend on them). Interleaving puts load from
other processes on every engine alike. Reported per engine: decode ms/token median and p90 per
context, prefill tokens/s and TTFT (medians), and each as a fraction of its roofline bound:
decode reads at least the matmul weights and the KV cache once (bytes / measured bandwidth),
prefill does at least ``2 x matmul weights x tokens`` flops (flops / measured GEMM peak).
RSS: the process's RSS growth while the engine was set up, and the process's peak RSS at the end.
"""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from slmc.bench import machine
from slmc.bench.engines import ENGINES, Engine, ort_engines, slmc_engine, torch_engine
from slmc.bench.goals import goals
from slmc.bench.models import BENCH_MODELS, bench_model, linear_elements
from slmc.errors import InputError, ModelError


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def check_settings(models: list[str], engines: list[str], contexts: list[int], prefill: int, rounds: int, threads: int) -> None:
    unknown = [m for m in models if m not in BENCH_MODELS]
    if unknown:
        raise ModelError(f"unknown benchmark model(s) {unknown}; known: {', '.join(BENCH_MODELS)}")
    bad = [e for e in engines if e not in ENGINES]
    if bad or "slmc" not in engines:
        raise InputError(f"--engines must include slmc and name only {', '.join(ENGINES)}; got {engines}")
    if min([*contexts, prefill, rounds, threads]) < 1:
        raise InputError("contexts, --prefill, --rounds and --threads must be at least 1")


def _setup(name: str, spec: Any, engines: list[str], recipe: Path, threads: int, work: Path) -> list[Engine]:
    from slmc.graph.ir import trace

    linear_bytes = 4 * linear_elements(spec.module)
    made: list[Engine] = []
    for engine in engines:
        before = _rss_mb()
        if engine == "slmc":
            made.append(slmc_engine(spec, recipe, work / name, linear_bytes))
        elif engine == "torch":
            made.append(torch_engine(spec, threads, linear_bytes))
        elif any(e.name.startswith("ort-") for e in made):
            continue  # both ONNX Runtime engines come from one export, made when the first was listed
        else:
            made.extend(ort_engines(trace(spec), threads, work / name, linear_bytes,
                                    fp32="ort-fp32" in engines, int8="ort-int8" in engines))
        for added in made[-2 if engine.startswith("ort-") and {"ort-fp32", "ort-int8"} <= set(engines) else -1:]:
            added.details["rss_growth_mb"] = round(_rss_mb() - before, 1)
    return made


def bench_one(name: str, engines: list[str], contexts: list[int], prefill: int, rounds: int, threads: int,
              recipe: Path, bounds: dict[str, float], work: Path) -> dict[str, Any]:
    before = _rss_mb()
    spec = bench_model(name, max_context=max([*contexts, prefill]) + 8)
    torch_model_mb = round(_rss_mb() - before, 1)  # the eager model, which every other engine starts from
    cache = spec.kv_cache
    usable = sorted({min(c, cache.max_context - 1) for c in contexts})
    made = _setup(name, spec, engines, recipe, threads, work)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 64, (1, prefill), dtype=np.int64)
    empty_k, empty_v = cache.empty()
    caches = {c: tuple(_aligned(rng.standard_normal((cache.layers, 1, cache.kv_heads, c + 1, cache.head_dim)).astype(np.float32))
                       for _ in range(2)) for c in usable}
    one = ids[:, :1]
    times: dict[str, dict[str, list[float]]] = {e.name: {"prefill": [], **{f"decode_{c}": [] for c in usable}} for e in made}
    for e in made:  # warm-up: first calls allocate
        e.step(ids, empty_k, empty_v)
        for c in usable:
            e.step(one, *caches[c])
    for _ in range(rounds):
        for e in made:
            times[e.name]["prefill"].append(timed(lambda: int(np.argmax(e.step(ids, empty_k, empty_v)[0, -1]))))
            for c in usable:
                times[e.name][f"decode_{c}"].append(timed(lambda: e.step(one, *caches[c])))
    kv_bytes_per_position = 2 * cache.layers * cache.kv_heads * cache.head_dim * 4
    results = {}
    for e in made:
        t = times[e.name]
        prefill_s = statistics.median(t["prefill"])
        flops = 2 * linear_elements(spec.module) * prefill
        entry: dict[str, Any] = {
            "setup_seconds": round(e.setup_seconds, 1),
            "prefill_tokens": prefill,
            "prefill_tokens_per_s": round(prefill / prefill_s, 1),
            "ttft_ms": round(1e3 * prefill_s, 2),
            "prefill_fraction_of_gemm_peak": round(flops / prefill_s / 1e9 / bounds["gemm_peak_gflops"], 4),
            "decode": {},
            **e.details,
        }
        for c in usable:
            d = t[f"decode_{c}"]
            median = statistics.median(d)
            bound = (e.weight_bytes + kv_bytes_per_position * c) / (bounds["memory_bandwidth_gbs"] * 1e9)
            entry["decode"][str(c)] = {"ms_median": round(1e3 * median, 3), "ms_p90": round(1e3 * _percentile(d, 90), 3),
                                       "fraction_of_bandwidth_bound": round(bound / median, 4)}
        results[e.name] = entry
    ratios = {e: {"decode_vs_slmc": {c: round(results[e]["decode"][c]["ms_median"] / results["slmc"]["decode"][c]["ms_median"], 3)
                                     for c in results[e]["decode"]},
                  "prefill_vs_slmc": round(results[e]["ttft_ms"] / results["slmc"]["ttft_ms"], 3)}
              for e in results if e != "slmc"}
    clipped = sorted(set(contexts) - set(usable))
    result = {"parameters": int(sum(p.numel() for p in spec.module.parameters())), "contexts": usable,
            "contexts_note": (f"contexts {clipped} exceed max_context {cache.max_context}: timed at "
                              f"{cache.max_context - 1}") if clipped else None,
            "matmul_weight_bytes_fp32": 4 * linear_elements(spec.module), "torch_model_rss_mb": torch_model_mb,
            "engines": results,
            "time_ratio_other_over_slmc": ratios}
    result["goals"] = goals(result)
    return result


def _aligned(array: np.ndarray, alignment: int = 64) -> np.ndarray:
    """A copy of ``array`` starting on an ``alignment``-byte boundary: what a decode loop feeds back
    (the cache an engine returned last step; slmc's runtime then shares it without a copy, torch
    and ONNX Runtime take any numpy array without one)."""
    raw = np.empty(array.nbytes + alignment, np.uint8)
    offset = -raw.ctypes.data % alignment
    out = raw[offset:offset + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


def run_bench(models: list[str], engines: list[str] | None = None, contexts: list[int] | None = None, prefill: int = 128,
              rounds: int = 10, threads: int | None = None, recipe: str | Path | None = None) -> dict[str, Any]:
    """Benchmark ``models``; returns the JSON report (see the module docstring)."""
    engines = list(engines or ENGINES)
    contexts = list(contexts or [128, 512])
    threads = threads or machine.cores()
    check_settings(models, engines, contexts, prefill, rounds, threads)
    start = time.perf_counter()
    before = machine.load()
    bounds = machine.describe(threads)
    report: dict[str, Any] = {"machine": bounds, "load_before": before, "settings": {
        "engines": engines, "contexts": contexts, "prefill": prefill, "rounds": rounds, "threads": threads}, "models": {}}
    with tempfile.TemporaryDirectory(prefix="slmc-bench-") as tmp:
        work = Path(tmp)
        recipe_path = Path(recipe) if recipe else work / "fp32.yaml"
        if recipe is None:
            recipe_path.write_text("passes: []\nverify: {num_samples: 1, atol: 1.0e-3}\n")
        report["settings"]["recipe"] = str(recipe) if recipe else "passes: [] (fp32, no compression)"
        for name in models:
            report["models"][name] = bench_one(name, engines, contexts, prefill, rounds, threads, recipe_path, bounds, work)
    report["load_after"] = machine.load()
    report["loaded"] = machine.loaded(before, report["load_after"], threads)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["seconds"] = round(time.perf_counter() - start, 1)
    return report
