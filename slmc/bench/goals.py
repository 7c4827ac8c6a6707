"""The speed and memory goals, computed from one model's ``slmc bench`` result (docs/benchmarks.md).

Every goal compares slmc with an engine of the same run (separate processes, alternated, the same
thread policy), so the ratio is what the goal is about, not absolute times. A goal whose engines did
not run is left out (the report lists unavailable engines and why). Issue 22 (the baseline is
llama.cpp on the same weights as GGUF Q4_0): decode time <= 0.8x at every context, prefill throughput
>= 1.0x at every prompt length, peak RSS <= 1.2x, decode >= 60% of the memory-bandwidth bound at the
first context (``slmc.bench.decode_bytes``: the bytes one step reads, over ``machine.bandwidth_gbs``, the largest
DRAM bandwidth figure, the N-thread read-only stream among them; the share of the LLC bandwidth is the decode row's ``fraction_of_llc_bound``, tabled beside it), peak
RSS of a fresh process that loads the artifact and decodes 64 steps <= weights file + KV cache + 60 MB, for
the Python runtime and for ``slmc-run`` (``slmc.bench.footprint``), decode on
slmc's threads faster than on one (``slmc@1t``, the same artifact with a thread override). Issue 18 (the native runner): ``slmc-run`` decode time <= 1.05x the Python runtime's,
and its peak RSS <= the weights file + the KV cache at the context used + 40 MB (per run, at the
context it ended with). Issue 7 (earlier
baselines): decode <= 0.5x PyTorch eager fp32 and <= 1.0x ONNX Runtime int8, prefill >= 0.8x ONNX
Runtime int8, at the first context and prompt length. In a run with several recipes (``slmc bench -r A -r B``)
"slmc" and "slmc-native" in every goal are the first recipe's instances (``slmc[A]``, ``slmc-native[A]``); the
other recipes' instances are measured and tabled, not judged. A goal the run cannot judge although its engines ran
(slmc's own run on one thread for the thread goal; no resident cache for the growth goal) is a row without a
figure that says why (``measured`` and ``met`` null, ``no_figure`` the reason), not a value read as "not met".
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slmc.bench.engines import instance_name

LLAMA = "llama-cpp-q4_0"
ONE_THREAD = "slmc@1t"
NATIVE_RSS_SLACK_MB = 40
RSS_SLACK_MB = 60  # issue 22: peak RSS <= weights file + KV cache + 60 MB
GROWTH_LIMIT_MB = 5.0


@dataclass(frozen=True)
class Row:
    """One goal row as a measure gives it when a plain ``(at, value)`` does not say enough: ``value`` None is a row
    without a figure (``reason`` says why); ``what`` replaces the goal's description with this row's actual terms."""
    at: int
    value: float | None
    reason: str = ""
    what: str = ""


def _decode(result: dict[str, Any], engine: str, context: str) -> float:
    return result["engines"][engine]["decode"][context]["ms_median"]


def _prefill(result: dict[str, Any], engine: str, tokens: str) -> float:
    return result["engines"][engine]["prefill"][tokens]["tokens_per_s"]


def decode_ratio(baseline: str, contexts: str = "all") -> Callable[[dict[str, Any]], list[tuple[int, float]]]:
    def rows(result: dict[str, Any]) -> list[tuple[int, float]]:
        chosen = result["contexts"] if contexts == "all" else result["contexts"][:1]
        return [(c, _decode(result, "slmc", str(c)) / _decode(result, baseline, str(c))) for c in chosen]
    return rows


def thread_scaling(result: dict[str, Any]) -> list[tuple[int, float]] | list[Row]:
    """slmc's decode time on its threads (its default: one per physical core, or the common policy's) over the
    same artifact's on one thread (``slmc@1t``), per context: below 1 when the second thread pays. When slmc's own
    process ran one TVM thread (``threading.tvm_pool_threads`` 1: a one-core machine, or ``--thread-policy
    common-passive --threads 1``) both sides are one thread and the ratio (~1.0) says nothing: a row without a figure."""
    if result["engines"]["slmc"].get("threading", {}).get("tvm_pool_threads") == 1:
        return [Row(0, None, "slmc's own run used one TVM thread (tvm_pool_threads 1), as slmc@1t does: "
                             "there is no second thread to compare")]
    return [(c, _decode(result, "slmc", str(c)) / _decode(result, ONE_THREAD, str(c))) for c in result["contexts"]]


def rss_growth(result: dict[str, Any]) -> list[Row]:
    """MB the slmc process grew over a generation from token ``first`` to ``last`` beyond the KV cache it wrote
    (``slmc.bench.timing.GrowthProbe``; the worst process), described with the run's own ``first`` and ``last``
    (``first`` is min(100, max_context - 2)). An artifact without a resident cache (the copy contract's
    ``StepTimer`` has no probe) gets a row without a figure saying so."""
    entry = result["engines"]["slmc"]
    runs = entry.get("rss_growth") or []
    if not runs:
        mode = entry["details"].get("kv_cache", "resident")  # absent: a report written before it was recorded
        return [] if mode == "resident" else [Row(0, None, f"the artifact has no resident KV cache (kv_cache: {mode}): "
                                                           "the copy contract's timer has no growth probe")]
    first, last = runs[0]["first"], runs[0]["last"]
    return [Row(last, max((r["rss_last_bytes"] - r["rss_first_bytes"] - r["kv_written_bytes"]) / 2**20 for r in runs),
                what=f"slmc RSS growth from token {first} to token {last} of a generation, less the KV written, MB")]


def rss_budget(result: dict[str, Any]) -> list[tuple[int, float]]:
    """The slmc process's peak RSS over weights file + KV cache at the largest context it held + 60 MB."""
    entry = result["engines"]["slmc"]
    if "weights_file_bytes" not in entry["details"] or "kv_cache_bytes_per_token" not in entry:
        return []  # a report written before these were recorded
    tokens = max(max(result["contexts"]) + 1, max(result["prefills"]))
    budget = entry["details"]["weights_file_bytes"] + entry["kv_cache_bytes_per_token"] * (tokens + 1) + RSS_SLACK_MB * 2**20
    return [(tokens, entry["peak_rss_mb"] * 2**20 / budget)]


def footprint_budget(name: str) -> Callable[[dict[str, Any]], list[tuple[int, float]]]:
    """Engine ``name``'s footprint processes (``slmc.bench.footprint``): the worst peak RSS over weights file + KV
    cache + 60 MB, at the context they reached (prompt + steps). Processes that could not run are not rows (the
    engine's ``footprint`` entries keep their reason)."""
    def rows(result: dict[str, Any]) -> list[tuple[int, float]]:
        runs = [f for f in result["engines"][name].get("footprint", []) if "unavailable" not in f]
        if not runs:
            return []
        worst = max(f["peak_rss_bytes"] / (f["weights_file_bytes"] + f["kv_cache_bytes"] + RSS_SLACK_MB * 2**20) for f in runs)
        return [(runs[0]["prompt_tokens"] + runs[0]["decode_steps"], worst)]
    return rows


def native_decode_ratio(result: dict[str, Any]) -> list[tuple[int, float]]:
    return [(c, _decode(result, "slmc-native", str(c)) / _decode(result, "slmc", str(c))) for c in result["contexts"]]


def prefill_ratio(baseline: str, lengths: str = "all") -> Callable[[dict[str, Any]], list[tuple[int, float]]]:
    def rows(result: dict[str, Any]) -> list[tuple[int, float]]:
        chosen = result["prefills"] if lengths == "all" else result["prefills"][:1]
        return [(p, _prefill(result, "slmc", str(p)) / _prefill(result, baseline, str(p))) for p in chosen]
    return rows


def rss_ratio(result: dict[str, Any]) -> list[tuple[int, float]]:
    return [(0, result["engines"]["slmc"]["peak_rss_mb"] / result["engines"][LLAMA]["peak_rss_mb"])]


def bandwidth_fraction(result: dict[str, Any]) -> list[tuple[int, float]]:
    c = result["contexts"][0]
    return [(c, result["engines"]["slmc"]["decode"][str(c)]["fraction_of_bandwidth_bound"])]


def native_rss(result: dict[str, Any]) -> list[tuple[int, float]]:
    """slmc-run's peak RSS over its bound (weights file + KV cache at the context used + 40 MB), per context
    used (the largest over the runs that ended there): <= 1.0 meets the goal. Each run's terms come from the
    runner's own report (``NativeTimer.memory_runs``)."""
    worst: dict[int, float] = {}
    for run in result["engines"]["slmc-native"]["memory_runs"]:
        budget = run["weights_file_bytes"] + run["kv_cache_bytes"] + NATIVE_RSS_SLACK_MB * 2**20
        worst[run["context"]] = max(worst.get(run["context"], 0.0), run["peak_rss_bytes"] / budget)
    return sorted(worst.items())


@dataclass(frozen=True)
class Goal:
    key: str
    issue: int
    what: str
    engines: tuple[str, ...]  # besides slmc; the goal is left out when one did not run
    measure: Callable[[dict[str, Any]], list[tuple[int, float]] | list[Row]]  # (context or prompt length, 0 when neither; value)
    limit: float
    kind: str  # in LIMITS: "max" the value must be at most the limit, "below" less than it, "min" at least it


LIMITS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "max": ("<=", operator.le), "below": ("<", operator.lt), "min": (">=", operator.ge)}


GOALS = (
    Goal("decode_time_vs_llama_cpp_q4_0", 22, "decode ms/token, slmc / llama.cpp Q4_0", (LLAMA,), decode_ratio(LLAMA), 0.8, "max"),
    Goal("prefill_throughput_vs_llama_cpp_q4_0", 22, "prefill tokens/s, slmc / llama.cpp Q4_0", (LLAMA,), prefill_ratio(LLAMA),
         1.0, "min"),
    Goal("peak_rss_vs_llama_cpp_q4_0", 22, "peak RSS of the engine process, slmc / llama.cpp Q4_0", (LLAMA,), rss_ratio, 1.2, "max"),
    Goal("decode_fraction_of_bandwidth", 22, "decode: bytes one step reads (stored weights read, KV at the context) / "
         "measured DRAM bandwidth (max of the 1-thread triad and the 1- and N-thread read over >= 4x the LLC) / time", (), bandwidth_fraction, 0.6, "min"),
    Goal("peak_rss_vs_weights_kv_budget", 22, "slmc peak RSS / (weights file + KV cache at the largest context + 60 MB)",
         (), rss_budget, 1.0, "max"),
    Goal("load_64_steps_peak_rss_vs_budget", 22, "slmc peak RSS of a fresh process: load + 8-token prompt + 64 decode "
         "steps / (weights file + KV cache + 60 MB)", (), footprint_budget("slmc"), 1.0, "max"),
    Goal("native_load_64_steps_peak_rss_vs_budget", 22, "slmc-run peak RSS of its process: load + 8-token prompt + 64 "
         "decode steps / (weights file + KV cache + 60 MB)", ("slmc-native",), footprint_budget("slmc-native"), 1.0, "max"),
    Goal("rss_growth_over_generation", 22, "slmc RSS growth over a generation from token min(100, max_context - 2) to "
         "the last, less the KV written, MB",
         (), rss_growth, GROWTH_LIMIT_MB, "max"),
    Goal("decode_two_threads_vs_one", 22, "decode ms/token, slmc on its threads / slmc@1t on one thread", (ONE_THREAD,),
         thread_scaling, 1.0, "below"),
    Goal("native_decode_time_vs_python", 18, "decode ms/token, slmc-run / slmc Python runtime", ("slmc-native",),
         native_decode_ratio, 1.05, "max"),
    Goal("native_peak_rss_vs_budget", 18, "slmc-run peak RSS / (weights file + KV cache at the context used + 40 MB)",
         ("slmc-native",), native_rss, 1.0, "max"),
    Goal("decode_time_vs_torch_fp32", 7, "decode ms/token, slmc / PyTorch eager fp32", ("torch",), decode_ratio("torch", "first"),
         0.5, "max"),
    Goal("decode_time_vs_ort_int8", 7, "decode ms/token, slmc / ONNX Runtime int8-dynamic", ("ort-int8",),
         decode_ratio("ort-int8", "first"), 1.0, "max"),
    Goal("prefill_throughput_vs_ort_int8", 7, "prefill tokens/s, slmc / ONNX Runtime int8-dynamic", ("ort-int8",),
         prefill_ratio("ort-int8", "first"), 0.8, "min"),
)


def goals(result: dict[str, Any], label: str = "") -> list[dict[str, Any]]:
    """Every goal row for one model's result (``slmc.bench.run.bench_one``), judging the slmc instances of the
    recipe ``label`` (``""``: the run's only recipe): they stand for "slmc" and "slmc-native" in every goal."""
    judged = {instance_name(e, label, threads): instance_name(e, "", threads)
              for e, threads in (("slmc", None), ("slmc-native", None), ("slmc", 1))}
    engines = {**result["engines"], **{plain: result["engines"][name] for name, plain in judged.items()
                                       if name in result["engines"]}}
    result, judged_name = {**result, "engines": engines}, instance_name("slmc", label)
    rows = []
    for goal in GOALS:
        if "slmc" not in engines or any(e not in engines for e in goal.engines):
            continue
        for got in goal.measure(result):
            row = got if isinstance(got, Row) else Row(*got)
            sign, holds = LIMITS[goal.kind]
            rows.append({"goal": goal.key, "issue": goal.issue, "what": row.what or goal.what, "at": row.at,
                         "slmc": judged_name, "limit": f"{sign} {goal.limit}",
                         **({"measured": None, "met": None, "no_figure": row.reason} if row.value is None else
                            {"measured": round(row.value, 3), "met": holds(row.value, goal.limit)})})
    return rows
