"""What ``slmc search`` writes: ``front.json`` (every trial, the front, the choice, the settings),
``chosen.yaml`` (a recipe that reproduces the choice with ``slmc compile -r`` and gates the compile on
the budget) and ``pareto.html`` (the quality x size plot, ``slmc.report.html.pareto_figure``)."""

from __future__ import annotations

import html
import json
from pathlib import Path

from slmc.search.run import SearchResult

FRONT_JSON = "front.json"
CHOSEN_YAML = "chosen.yaml"
PARETO_HTML = "pareto.html"


def _label(point: dict) -> str:
    grouping = "" if point["bits"] >= 32 else ("pc" if point["group_size"] is None else f"g{point['group_size']}")
    return f"s{point['sparsity']:g} b{point['bits']}{grouping} r{point['lowrank_ratio']:g}"


def write_report(result: SearchResult, out: Path) -> dict[str, Path]:
    """Write the three files into ``out`` (created); return their paths by name."""
    from slmc.report.html import STYLE, pareto_figure

    out.mkdir(parents=True, exist_ok=True)
    data = {"target": result.target, "chosen": result.chosen, "front": result.front, "settings": result.settings,
            "points": result.points, "excluded": result.excluded}
    (out / FRONT_JSON).write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    chosen = next(p for p in result.points if p["id"] == result.chosen)
    ev = result.settings["evaluation"]
    header = (f"# slmc search: chosen candidate {result.chosen} for target '{result.target}'\n"
              f"# perplexity increase {chosen['ppl_increase']:.4%} over {chosen['tokens_scored']} tokens of {ev['text']} "
              f"(eager, compressed graph), {chosen['size_bytes']} weight bytes"
              + (f", latency {chosen['latency_ms']:.3f} ms ({chosen['latency_source']})" if chosen["latency_ms"] is not None else "")
              + f"\n# reproduce: slmc compile -r {CHOSEN_YAML}   (the verify gates re-check the budget on the artifact)\n")
    (out / CHOSEN_YAML).write_text(header + result.candidates[result.chosen].recipe_yaml(), encoding="utf-8")
    points = [{**p, "label": _label(p), "error": p["ppl_increase"]} for p in result.points]
    figure = pareto_figure(points, ylabel="relative perplexity increase", xlabel="stored weight bytes",
                           caption=f"{len(points)} candidates for '{result.target}'; front: {', '.join(result.front)}; "
                                   f"chosen: {result.chosen}")
    (out / PARETO_HTML).write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>slmc search</title>"
                                   f"<style>{STYLE}</style></head><body><h1>slmc search: {html.escape(result.target)}</h1>"
                                   f"{figure}</body></html>\n", encoding="utf-8")
    return {"front": out / FRONT_JSON, "chosen": out / CHOSEN_YAML, "plot": out / PARETO_HTML}
