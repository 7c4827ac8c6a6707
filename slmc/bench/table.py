"""Markdown tables from ``slmc bench`` JSON reports (docs/benchmarks.md is written from them).

    python -m slmc.bench.table report.json [more.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from slmc.bench.goals import LLAMA


def _ratio(value: float, base: float | None) -> str:
    return f" ({value / base:.2f}x)" if base else ""


def markdown(reports: list[dict[str, Any]]) -> str:
    """Per model: one row per engine; ratios are engine time / llama.cpp Q4_0 time (when it ran)."""
    lines = []
    for report in reports:
        for model, result in report["models"].items():
            contexts, prefills = result["contexts"], result["prefills"]
            head = ["model", "engine", *[f"decode ms/token @{c}: median / p90 (vs llama.cpp Q4_0, % of bw bound)" for c in contexts],
                    *[f"prefill tok/s @{p} (vs llama.cpp Q4_0)" for p in prefills], "peak RSS MB", "threads"]
            lines += ["", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
            base = result["engines"].get(LLAMA)
            for engine, entry in result["engines"].items():
                cells = [model, engine]
                for c in contexts:
                    d = entry["decode"][str(c)]
                    b = base["decode"][str(c)]["ms_median"] if base else None
                    versus = f"{d['ms_median'] / b:.2f}x, " if b else ""
                    cells.append(f"{d['ms_median']:.2f} / {d['ms_p90']:.2f} ({versus}{100 * d['fraction_of_bandwidth_bound']:.0f}% bw)")
                for p in prefills:
                    t = entry["prefill"][str(p)]["tokens_per_s"]
                    b = base["prefill"][str(p)]["tokens_per_s"] if base else None
                    cells.append(f"{t:.0f}{_ratio(t, b)}")
                cells.append(f"{entry['peak_rss_mb']:.0f}{_ratio(entry['peak_rss_mb'], base['peak_rss_mb'] if base else None)}")
                cells.append(json.dumps(entry["threading"], sort_keys=True).replace("|", "/"))
                lines.append("| " + " | ".join(cells) + " |")
            for engine, reason in result.get("unavailable", {}).items():
                lines.append(f"\n{model}: {engine} not measured: {reason}")
    return "\n".join(lines).strip()


def goals_markdown(reports: list[dict[str, Any]]) -> str:
    """The goals (``slmc.bench.goals``) per model: measured value, limit, met."""
    lines = ["| model | recipe | issue | goal | at | measured | limit | met |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for report in reports:
        for model, result in report["models"].items():
            for g in result.get("goals", []):
                lines.append(f"| {model} | {report['settings']['recipe']} | {g['issue']} | {g['what']} | {g['at'] or ''} "
                             f"| {g['measured']:.3f} | {g['limit']} | {'yes' if g['met'] else 'no'} |")
    return "\n".join(lines)


def machine_lines(report: dict[str, Any]) -> str:
    m, policy = report["machine"], report["settings"]["thread_policy"]
    threads = f"{policy['threads']} threads per engine" if policy["common"] else "each engine's default threads"
    return (f"{m['cpu_model']}, {m['cores']} cores usable; thread policy {policy['name']} ({threads}); measured triad "
            f"bandwidth {m['memory_bandwidth_gbs']} GB/s, read-only (GEMV) bandwidth {m.get('read_bandwidth_gbs', 'not measured')} "
            f"GB/s ('% bw' divides by the larger), fp32 GEMM peak {m['gemm_peak_gflops']} GFLOP/s; load (1 min) "
            f"{report['load_before']['load1']} before, {report['load_after']['load1']} after; loaded: {report['loaded']}; "
            f"{report['settings']['repeats']} processes per engine, alternated; {report['seconds']} s")


def main(paths: list[str]) -> str:
    loaded = [json.loads(Path(p).read_text()) for p in paths]
    parts = [markdown(loaded), "", goals_markdown(loaded)]
    parts += [f"\n{p}: {machine_lines(r)}" for p, r in zip(paths, loaded)]
    return "\n".join(parts)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
