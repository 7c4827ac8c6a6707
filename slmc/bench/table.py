"""Markdown tables from ``slmc bench`` JSON reports (docs/benchmarks.md is written from them).

    python -m slmc.bench.table report.json [more.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _row(model: str, engine: str, entry: dict[str, Any], slmc: dict[str, Any], contexts: list[int]) -> str:
    cells = [model, engine, "/".join(str(c) for c in contexts)]
    for c in contexts:
        d, base = entry["decode"][str(c)], slmc["decode"][str(c)]
        cells.append(f"{d['ms_median']:.2f} / {d['ms_p90']:.2f} ({d['ms_median'] / base['ms_median']:.2f}x, "
                     f"{100 * d['fraction_of_bandwidth_bound']:.0f}% bw)")
    cells.append(f"{entry['prefill_tokens_per_s']:.0f} ({entry['ttft_ms'] / slmc['ttft_ms']:.2f}x, "
                 f"{100 * entry['prefill_fraction_of_gemm_peak']:.1f}% peak)")
    cells.append(f"{entry['ttft_ms']:.1f}")
    cells.append(f"{entry.get('rss_growth_mb', 0):.0f}")
    return "| " + " | ".join(cells) + " |"


def markdown(reports: list[dict[str, Any]]) -> str:
    """One table over every model of ``reports``; ratios are engine time / slmc time (> 1: slmc faster)."""
    lines = []
    for report in reports:
        for model, result in report["models"].items():
            contexts = result["contexts"]
            if not lines:
                head = ["model", "engine", "contexts",
                        *[f"decode ms/token, {which} context: median / p90 (time vs slmc, % of bw bound)"
                          for which in ("first", "second", "third", "fourth")[:len(contexts)]],
                        "prefill tok/s @128 (time vs slmc, % of GEMM peak)", "TTFT ms", "RSS growth MB"]
                lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
            slmc = result["engines"]["slmc"]
            for engine, entry in result["engines"].items():
                lines.append(_row(model, engine, entry, slmc, contexts))
    return "\n".join(lines)


def goals_markdown(reports: list[dict[str, Any]]) -> str:
    """Issue 7's goals (``slmc.bench.goals``) per model: measured value, limit, met."""
    lines = ["| model | recipe | goal | context | measured | limit | met |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for report in reports:
        for model, result in report["models"].items():
            for g in result.get("goals", []):
                lines.append(f"| {model} | {report['settings']['recipe']} | {g['what']} | {g['context']} | {g['measured']:.3f} "
                             f"| {g['limit']} | {'yes' if g['met'] else 'no'} |")
    return "\n".join(lines)


def machine_lines(report: dict[str, Any]) -> str:
    m = report["machine"]
    return (f"{m['cpu_model']}, {m['cores']} cores usable, {m['threads']} threads per engine; measured triad bandwidth "
            f"{m['memory_bandwidth_gbs']} GB/s, fp32 GEMM peak {m['gemm_peak_gflops']} GFLOP/s; load (1 min) "
            f"{report['load_before']['load1']} before, {report['load_after']['load1']} after; loaded: {report['loaded']}; "
            f"peak RSS {report['peak_rss_mb']} MB; {report['seconds']} s")


if __name__ == "__main__":
    loaded = [json.loads(Path(p).read_text()) for p in sys.argv[1:]]
    print(markdown(loaded))
    print()
    print(goals_markdown(loaded))
    for p, r in zip(sys.argv[1:], loaded):
        print(f"\n{p}: {machine_lines(r)}")
