"""Markdown tables from ``slmc bench`` JSON reports (docs/benchmarks.md is written from them).

    python -m slmc.bench.table report.json [more.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from slmc.bench.goals import LLAMA
from slmc.bench.run import process_spread


def _ratio(value: float, base: float | None) -> str:
    return f" ({value / base:.2f}x)" if base else ""


def _bandwidth_shares(decode: dict[str, Any]) -> str:
    """"88% DRAM bw, 30% LLC bw" (a report from before the LLC figure: "88% bw")."""
    dram = f"{100 * decode['fraction_of_bandwidth_bound']:.0f}%"
    if "fraction_of_llc_bound" not in decode:
        return f"{dram} bw"
    return f"{dram} DRAM bw, {100 * decode['fraction_of_llc_bound']:.0f}% LLC bw"


def markdown(reports: list[dict[str, Any]]) -> str:
    """Per model: one row per engine; ratios are engine time / llama.cpp Q4_0 time (when it ran)."""
    lines = []
    for report in reports:
        for model, result in report["models"].items():
            contexts, prefills = result["contexts"], result["prefills"]
            head = ["model", "engine", *[f"decode ms/token @{c}: median / p90 (vs llama.cpp Q4_0, % of DRAM / LLC bw bound)" for c in contexts],
                    *[f"prefill tok/s @{p} (vs llama.cpp Q4_0)" for p in prefills], "peak RSS MB", "threads"]
            lines += ["", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
            base = result["engines"].get(LLAMA)
            for engine, entry in result["engines"].items():
                cells = [model, engine]
                for c in contexts:
                    d = entry["decode"][str(c)]
                    b = base["decode"][str(c)]["ms_median"] if base else None
                    versus = f"{d['ms_median'] / b:.2f}x, " if b else ""
                    cells.append(f"{d['ms_median']:.2f} / {d['ms_p90']:.2f} ({versus}{_bandwidth_shares(d)})")
                for p in prefills:
                    t = entry["prefill"][str(p)]["tokens_per_s"]
                    b = base["prefill"][str(p)]["tokens_per_s"] if base else None
                    cells.append(f"{t:.0f}{_ratio(t, b)}")
                cells.append(f"{entry['peak_rss_mb']:.0f}{_ratio(entry['peak_rss_mb'], base['peak_rss_mb'] if base else None)}")
                cells.append(json.dumps(entry["threading"], sort_keys=True).replace("|", "/"))
                lines.append("| " + " | ".join(cells) + " |")
            for engine, reason in result.get("unavailable", {}).items():
                lines.append(f"\n{model}: {engine} not measured: {reason}")
            for engine, entry in result["engines"].items():
                for reason in {f["unavailable"] for f in entry.get("footprint", []) if "unavailable" in f}:
                    lines.append(f"\n{model}: {engine}'s footprint process (load + 64 steps) failed: {reason}")
    return "\n".join(lines).strip()


def processes_markdown(reports: list[dict[str, Any]]) -> str:
    """Per model, engine and context: the spread of the measuring processes' median decode times (each process
    one sample; ``slmc.bench.run.process_spread``) and, from a run with ``--evict-llc``, the cold-cache decode."""
    lines = ["| model | engine | context | processes | decode ms, min / median of the process medians | spread "
             "(max - min) / median | cold-cache decode ms, median / p90 | cold - warm ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for report in reports:
        for model, result in report["models"].items():
            for engine, entry in result["engines"].items():
                for c in result["contexts"]:
                    d, cold = entry["decode"][str(c)], entry.get("decode_cold", {}).get(str(c))
                    medians = d["process_medians"]
                    spread = process_spread(medians)
                    cold_cells = (f"{cold['ms_median']:.2f} / {cold['ms_p90']:.2f} | {cold['cold_minus_warm_ms']:+.2f}"
                                  if cold else "not measured | ")
                    lines.append(f"| {model} | {engine} | {c} | {len(medians)} | {spread['process_min_ms']:.2f} / "
                                 f"{spread['process_median_ms']:.2f} | {100 * spread['process_spread']:.1f}% | {cold_cells} |")
    return "\n".join(lines)


def goals_markdown(reports: list[dict[str, Any]]) -> str:
    """The goals (``slmc.bench.goals``) per model: measured value, limit, met (a row without a figure: why)."""
    lines = ["| model | recipe | issue | goal | at | measured | limit | met |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for report in reports:
        for model, result in report["models"].items():
            for g in result.get("goals", []):
                lines.append(f"| {model} | {report['settings']['recipe']} | {g['issue']} | {g['what']} | {g['at'] or ''} "
                             f"| {_goal_cells(g)} |")
    return "\n".join(lines)


def _goal_cells(goal: dict[str, Any]) -> str:
    """The measured, limit and met cells of one goal row."""
    if goal["measured"] is None:
        return f"no figure | {goal['limit']} | {goal['no_figure']}"
    return f"{goal['measured']:.3f} | {goal['limit']} | {'yes' if goal['met'] else 'no'}"


def machine_lines(report: dict[str, Any]) -> str:
    m, policy = report["machine"], report["settings"]["thread_policy"]
    threads = f"{policy['threads']} threads per engine" if policy["common"] else "each engine's default threads"
    return (f"{m['cpu_model']}, {m['cores']} cores usable; thread policy {policy['name']} ({threads}); {_memory_line(m)}; "
            f"fp32 GEMM peak {m['gemm_peak_gflops']} GFLOP/s; {_eviction_line(report)}load (1 min) "
            f"{report['load_before']['load1']} before, {report['load_after']['load1']} after; loaded: {report['loaded']}; "
            f"{report['settings']['repeats']} processes per engine, alternated; {report['seconds']} s")


def _memory_line(m: dict[str, Any]) -> str:
    if "llc_bytes" not in m:  # a report from before the LLC-sized sets
        return (f"measured triad bandwidth {m['memory_bandwidth_gbs']} GB/s, read-only (GEMV) bandwidth "
                f"{m.get('read_bandwidth_gbs', 'not measured')} GB/s ('% bw' divides by the larger; sets of 384 / 256 MB)")
    capped = " (capped by the memory available: below 4x the LLC)" if m["dram_set_capped"] else ""
    return (f"last level cache {m['llc_bytes'] / 2**20:.0f} MiB ({m['llc_source']}); DRAM bandwidth over a "
            f"{m['dram_set_bytes'] / 2**20:.0f} MiB set{capped}: {_figures(m, DRAM_NAMES, 'bandwidth_bound')} "
            f"('% DRAM bw' divides by the largest); LLC bandwidth over a {m['llc_set_bytes'] / 2**20:.0f} MiB set: "
            f"{_figures(m, LLC_NAMES, 'llc_bandwidth_bound')} ('% LLC bw' divides by the largest); "
            f"{m['bandwidth_seconds']} s to measure")


# every bandwidth figure a report may hold, as the machine line names it (GEMV: reports before session 12)
DRAM_NAMES = {"memory_bandwidth_gbs": "triad (1 thread)", "read_1t_bandwidth_gbs": "read-only (1 thread)",
              "read_nt_bandwidth_gbs": "read-only ({threads} threads)", "read_bandwidth_gbs": "read-only (GEMV)"}
LLC_NAMES = {"llc_triad_bandwidth_gbs": "triad (1 thread)", "llc_read_1t_bandwidth_gbs": "read-only (1 thread)",
             "llc_read_nt_bandwidth_gbs": "read-only ({threads} threads)", "llc_read_bandwidth_gbs": "read-only (GEMV)"}


def _figures(m: dict[str, Any], names: dict[str, str], bound: str) -> str:
    """``name value GB/s`` for each figure ``m`` holds, the bound's marked ``(the bound)`` when the report names it."""
    threads = m.get("read_threads", m.get("threads"))
    return ", ".join(f"{name.format(threads=threads)} {m[key]} GB/s{' (the bound)' * (m.get(bound) == key)}"
                     for key, name in names.items() if key in m)


def _eviction_line(report: dict[str, Any]) -> str:
    evict = report["settings"].get("evict_llc_bytes")
    return f"cold-cache decode after writing {evict / 2**20:.0f} MiB before each step (--evict-llc); " if evict else ""


def main(paths: list[str]) -> str:
    loaded = [json.loads(Path(p).read_text()) for p in paths]
    parts = [markdown(loaded), "", processes_markdown(loaded), "", goals_markdown(loaded)]
    parts += [f"\n{p}: {machine_lines(r)}" for p, r in zip(paths, loaded)]
    return "\n".join(parts)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
