"""One fair benchmark run (issue 22): every engine measured in fresh processes of its own, alternated.

Several recipes (``recipe_labels``) measure one instance of each slmc engine per recipe
(``slmc.bench.engines.instances``), alternated with the other engines like any engine; the goals judge
the first recipe's instances. Per model: one preparation process makes every engine's files
(``slmc.bench.prepare``); then ``repeats`` rounds each start, engine after engine in the same order every
round (``process_order``: A, B, A, B, A, B; recorded per model as ``process_order``), one measuring process per
engine (``slmc.bench.measure``) under the run's thread policy (``slmc.bench.thread_policy``:
by default every engine's own threading, nothing forced), followed, for an engine with one
(``EngineKind.footprint``), by its footprint process (``slmc.bench.footprint``: load + 8 tokens + 64 decode
steps, issue 22's peak RSS goal as worded). Each measuring process times ``steps`` decode steps
at every context and ``prefill_repeats`` prefills at every prompt length, then reports its peak RSS; with
``evict_llc`` it then times the decode steps once more with the LLC evicted before each (``slmc.bench.evict``,
``decode_cold``). Reported per engine: decode ms/token median and p90 over every sample of every process, per
context, and the min / median / spread ((max - min) / median) of the processes' medians;
prefill tokens/s and TTFT (medians) per prompt length; the peak RSS of its processes (the largest);
its threads; each time as a fraction of its roofline bound: decode reads at least what one step reads of
the engine's stored weights and its KV cache at the context (``slmc.bench.decode_bytes``; bytes / the
largest of the triad and the one- and N-thread read-only bandwidths measured over the DRAM set,
``machine.bandwidth_gbs``; each alone as ``fraction_of_triad_bound`` / ``fraction_of_read_1t_bound`` /
``fraction_of_read_nt_bound``; over the LLC set's, ``fraction_of_llc_bound``), prefill does at
least ``2 x (body matmul weights x tokens + head weights)`` flops (flops / measured GEMM peak; the first token
needs the output head at the prompt's last position only, which is all slmc's resident runtime and llama.cpp
compute). Load before and after, and
the machine, are recorded; a run on a loaded machine says so (``loaded``).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slmc.artifact.tvm_runtime import physical_cores
from slmc.bench import machine
from slmc.bench.machine import bandwidth_gbs, llc_bandwidth_gbs
from slmc.bench.child import run_child
from slmc.bench.decode_bytes import kv_bytes_per_token
from slmc.bench.engines import ENGINES, engine, instances, parse_engine
from slmc.bench.goals import goals
from slmc.bench.models import BENCH_MODELS
from slmc.bench.thread_policy import ThreadPolicy, thread_policy
from slmc.errors import InputError, ModelError, SlmcError

DEFAULT_CONTEXTS = (128, 1024, 2000)
DEFAULT_PREFILLS = (128, 1024)
DEFAULT_RECIPE = "passes:\n  - quantize: {bits: 4, group_size: 32, method: rtn}\n"
DEFAULT_RECIPE_NAME = "int4 g32 RTN weight-only (examples/recipes/int4-g32-rtn.yaml)"
KV_BYTES = 4  # fp32 cache entries
GROWTH = (100, 2000)  # issue 22: RSS after 2,000 generated tokens vs after 100 (engines that can: GrowthProbe)

# each DRAM figure's own decode fraction (``fraction_of_<name>_bound``); "read": the GEMV of reports before session 12
BOUND_FIGURES = {"triad": "memory_bandwidth_gbs", "read_1t": "read_1t_bandwidth_gbs", "read_nt": "read_nt_bandwidth_gbs",
                 "read": "read_bandwidth_gbs"}


def recipe_labels(recipes: Sequence[str | Path]) -> list[tuple[str, Path | None]]:
    """``(label, recipe)`` per recipe: one (or none: ``None``, the default recipe) keeps the plain engine names
    (label ``""``); several are labelled by their file's stem, which must then differ."""
    if len(recipes) <= 1:
        return [("", Path(recipes[0]) if recipes else None)]
    seen: dict[str, Path] = {}
    for path in map(Path, recipes):
        if path.stem in seen:
            raise InputError(f"recipes {seen[path.stem]} and {path} have the same file name stem {path.stem!r}, which "
                             f"names their engines (slmc[{path.stem}]); rename one")
        seen[path.stem] = path
    return list(seen.items())


def check_settings(models: list[str], engines: list[str], contexts: list[int], prefills: list[int], repeats: int,
                   steps: int, policy: str, threads: int | None, recipes: Sequence[str | Path] = ()) -> ThreadPolicy:
    unknown = [m for m in models if m not in BENCH_MODELS]
    if unknown:
        raise ModelError(f"unknown benchmark model(s) {unknown}; known: {', '.join(BENCH_MODELS)}")
    for name in engines:
        parse_engine(name)
    if "slmc" not in engines:
        raise InputError(f"--engines must include slmc (every ratio is about it); got {engines}")
    recipe_labels(recipes)
    if not contexts or not prefills or min([*contexts, *prefills, repeats, steps]) < 1:
        raise InputError("contexts, --prefill, --repeats and --steps must be at least 1")
    return thread_policy(policy, threads)


def process_order(engines: list[str], repeats: int) -> list[str]:
    """The measuring processes in the order they run: every engine once per round, the same order each round
    (two engines, three repeats: A, B, A, B, A, B), so no engine's processes run back to back."""
    return [e for _ in range(repeats) for e in engines]


def process_spread(medians: list[float]) -> dict[str, float]:
    """Min, median and spread ((max - min) / median) of the processes' median decode times."""
    median = statistics.median(medians)
    return {"process_min_ms": round(min(medians), 3), "process_median_ms": round(median, 3),
            "process_spread": round((max(medians) - min(medians)) / median, 4) if median else 0.0}


def _samples(runs: list[dict[str, Any]], key: str, context: str) -> dict[str, Any]:
    """Median and p90 over every sample of ``runs``' ``key`` at ``context``, and the processes' spread."""
    samples = [s for r in runs for s in r[key][context]]
    medians = [round(statistics.median(r[key][context]), 3) for r in runs]
    return {"ms_median": round(statistics.median(samples), 3), "ms_p90": round(float(np.percentile(samples, 90)), 3),
            "process_medians": medians, **process_spread(medians)}


def _say(text: str) -> None:
    sys.stderr.write(f"slmc bench: {text}\n")
    sys.stderr.flush()


def _summary(name: str, info: dict[str, Any], runs: list[dict[str, Any]], cache: dict[str, int], bounds: dict[str, Any],
             linear_bytes: int, head_bytes: int) -> dict[str, Any]:
    """One engine's entry (module docstring); ``linear_bytes`` / ``head_bytes``: every matmul weight / the output
    head's, in fp32."""
    # the engine's stored cache (slmc: the manifest's, e.g. an int8 cache with its scales; llama.cpp f16), else float32
    kv_per_position = info.get("kv_cache_bytes_per_token") or kv_bytes_per_token(cache, KV_BYTES)
    entry: dict[str, Any] = {"processes": len(runs), "threading": runs[0]["threading"],
                             "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                             "open_seconds": statistics.median(r["open_seconds"] for r in runs),
                             "memory_runs": [m for r in runs for m in r.get("memory_runs", [])],
                             "rss_growth": [r["rss_growth"] for r in runs if r.get("rss_growth")],
                             "footprint": [r["footprint"] for r in runs if r.get("footprint")],
                             "kv_cache_bytes_per_token": kv_per_position,
                             "decode": {}, "prefill": {},
                             "details": {k: v for k, v in info.items() if k not in ("kv", "model")}}
    # the roofline's bandwidths: the goal's (DRAM, the larger), each DRAM figure alone, the LLC's (absent in old reports)
    bandwidths = {"bandwidth": bandwidth_gbs(bounds), "llc": llc_bandwidth_gbs(bounds),
                  **{name: bounds.get(key) for name, key in BOUND_FIGURES.items()}}
    for c in runs[0]["decode_ms"]:
        read = info["weight_bytes"] + kv_per_position * int(c)  # bytes a step reads (slmc.bench.decode_bytes)
        decode = entry["decode"][c] = {**_samples(runs, "decode_ms", c), "bytes_read": read}
        decode.update({f"fraction_of_{bound}_bound": round(1e3 * read / (gbs * 1e9) / decode["ms_median"], 4)
                       for bound, gbs in bandwidths.items() if gbs})
        if runs[0].get("decode_cold_ms"):
            cold = entry.setdefault("decode_cold", {})[c] = _samples(runs, "decode_cold_ms", c)
            cold["cold_minus_warm_ms"] = round(cold["ms_median"] - entry["decode"][c]["ms_median"], 3)
    for p in runs[0]["prefill_s"]:
        seconds = statistics.median(s for r in runs for s in r["prefill_s"][p])
        flops = 2 * ((linear_bytes - head_bytes) / 4 * int(p) + head_bytes / 4)  # the head at the last position only
        entry["prefill"][p] = {"tokens_per_s": round(int(p) / seconds, 1), "ttft_ms": round(1e3 * seconds, 2),
                               "fraction_of_gemm_peak": round(flops / seconds / 1e9 / bounds["gemm_peak_gflops"], 4)}
    return entry


def bench_one(name: str, engines: list[str], contexts: list[int], prefills: list[int], repeats: int, steps: int,
              prefill_repeats: int, policy: ThreadPolicy, recipes: list[tuple[str, Path]], bounds: dict[str, Any],
              work: Path, evict_bytes: int = 0) -> dict[str, Any]:
    """``recipes``: ``(label, path)`` each (``recipe_labels``); the goals judge the first one's slmc instances.
    ``evict_bytes``: also cold-cache decode samples with an eviction buffer of that size (0: none)."""
    measured = {i.name: i for i in instances(engines, [label for label, _ in recipes])}
    _say(f"{name}: preparing {', '.join(measured)}")
    prepared = run_child("prepare", dict(model=name, instances=[[i.name, i.kind, i.label] for i in measured.values()],
                                         max_context=max([*contexts, *prefills]) + 8,
                                         recipes=[[label, str(path)] for label, path in recipes], work=str(work / name)),
                         env=policy.child_env())
    max_context = prepared["max_context"]
    usable = sorted({min(c, max_context - 1) for c in contexts})
    prompt_lengths = sorted({min(p, max_context - 1) for p in prefills})
    ready = [e for e in measured if "unavailable" not in prepared["engines"][e]]
    unavailable = {e: prepared["engines"][e]["unavailable"] for e in measured if e not in ready}
    for e, reason in unavailable.items():
        _say(f"{name}: engine {e} not measured: {reason}")
    runs: dict[str, list[dict[str, Any]]] = {e: [] for e in ready}
    for number, e in enumerate(process_order(ready, repeats)):
        _say(f"{name}: round {number // len(ready) + 1}/{repeats}, {e}")
        own = policy.with_threads(measured[e].threads) if measured[e].threads else policy
        growth = None if measured[e].threads else [min(GROWTH[0], max_context - 2), min(GROWTH[1], max_context - 1)]
        runs[e].append(run_child("measure", dict(engine_name=measured[e].kind, info=prepared["engines"][e], policy=own.to_json(),
                                                 contexts=usable, prefills=prompt_lengths, steps=steps,
                                                 prefill_repeats=prefill_repeats, growth=growth, evict_bytes=evict_bytes),
                                 env=own.child_env(), quiet=True))
        if engine(measured[e].kind).footprint_name and not measured[e].threads:
            runs[e][-1]["footprint"] = _footprint(measured[e].kind, prepared["engines"][e], own)
    cache = next(iter(prepared["engines"][e]["kv"] for e in ready))
    results = {e: _summary(e, prepared["engines"][e], runs[e], cache, bounds, prepared["linear_bytes_fp32"],
                           prepared["head_bytes_fp32"]) for e in ready}
    clipped = sorted(set(contexts) - set(usable)) + sorted(set(prefills) - set(prompt_lengths))
    result: dict[str, Any] = {
        "parameters": prepared["parameters"], "max_context": max_context, "contexts": usable, "prefills": prompt_lengths,
        "clipped_note": (f"lengths {clipped} exceed max_context {max_context}: timed at {max_context - 1}") if clipped else None,
        "kv_cache": cache, "matmul_weight_bytes_fp32": prepared["linear_bytes_fp32"],
        "head_weight_bytes_fp32": prepared["head_bytes_fp32"],
        "engines": results, "unavailable": unavailable, "process_order": process_order(ready, repeats)}
    result["goals"] = goals(result, recipes[0][0])
    return result


def _footprint(kind: str, info: dict[str, Any], policy: ThreadPolicy) -> dict[str, Any]:
    """The engine's footprint process (``slmc.bench.footprint``), or why it could not run (reported, not hidden)."""
    try:
        return run_child("footprint", dict(engine_name=kind, info=info, policy=policy.to_json()), env=policy.child_env(),
                         quiet=True)
    except SlmcError as exc:
        return {"unavailable": str(exc)}


def run_bench(models: list[str], engines: list[str] | None = None, contexts: list[int] | None = None,
              prefills: list[int] | None = None, repeats: int = 3, steps: int = 10, prefill_repeats: int = 2,
              thread_policy_name: str = "engine-default", threads: int | None = None,
              recipes: Sequence[str | Path] = (), evict_llc: bool = False) -> dict[str, Any]:
    """Benchmark ``models``; returns the JSON report (see the module docstring). Runs in the parent: it only
    measures the roofline and starts the preparation and measuring processes. ``recipes``: none (the default
    recipe), one, or several (``recipe_labels``). ``evict_llc``: cold-cache decode samples too, with an eviction
    buffer of ``machine.describe``'s ``eviction_bytes`` (2x the LLC)."""
    engines = list(engines or ENGINES)
    contexts = list(contexts or DEFAULT_CONTEXTS)
    prefills = list(prefills or DEFAULT_PREFILLS)
    policy = check_settings(models, engines, contexts, prefills, repeats, steps, thread_policy_name, threads, recipes)
    labelled = recipe_labels(recipes)
    start = time.perf_counter()
    before = machine.load()
    bounds = machine.describe(policy.threads or physical_cores())  # the engines' default: one per physical core
    report: dict[str, Any] = {"machine": bounds, "load_before": before, "settings": {
        "engines": engines, "contexts": contexts, "prefills": prefills, "repeats": repeats, "steps": steps,
        "prefill_repeats": prefill_repeats, "thread_policy": policy.to_json(), "process_per_measurement": True,
        "order": "round-robin, the same order every round (process_order)",
        "evict_llc_bytes": bounds["eviction_bytes"] if evict_llc else 0}, "models": {}}
    with tempfile.TemporaryDirectory(prefix="slmc-bench-") as tmp:
        work = Path(tmp)
        if labelled[0][1] is None:
            default = work / "int4-g32-rtn.yaml"
            default.write_text(DEFAULT_RECIPE)
            labelled = [("", default)]
        names = [str(path) for path in recipes] or [DEFAULT_RECIPE_NAME]
        report["settings"]["recipe"] = names[0]  # the recipe the goals judge
        report["settings"]["recipes"] = [{"recipe": recipe, "slmc_engines": [i.name for i in instances(engines, [label])
                                                                          if engine(i.kind).per_recipe]}
                                         for recipe, (label, _) in zip(names, labelled)]
        for name in models:
            report["models"][name] = bench_one(name, engines, contexts, prefills, repeats, steps, prefill_repeats, policy,
                                               labelled, bounds, work, report["settings"]["evict_llc_bytes"])
    report["load_after"] = machine.load()
    report["loaded"] = machine.loaded(before, report["load_after"], policy.threads or machine.cores())
    report["seconds"] = round(time.perf_counter() - start, 1)
    return report
