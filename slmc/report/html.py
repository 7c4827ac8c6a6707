"""``report.html``: one self-contained page (matplotlib PNGs inlined as base64, no external files).

Figures: weight bytes before/after per layer, per-layer error or sensitivity where a pass
measured it (``passes[].stats.layers``), and a search's Pareto front (``pareto_figure``, also
usable on its own by ``slmc search``). Tables: summary, quality gates, passes.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from slmc.report.report_json import Report

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}.pass{color:#070}.fail{color:#b00;font-weight:bold}figure{margin:1.5em 0}
figcaption{color:#555;font-size:.9em}
"""


def _subplots(width: float, height: float) -> tuple[Figure, Any]:
    """A figure outside pyplot (no global state, no display backend touched) and its axes."""
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def _png(fig: Figure) -> str:
    """``<img>`` with the figure as an inlined PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight", metadata={"Software": None})
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _figure(img: str, caption: str) -> str:
    return f"<figure>{img}<figcaption>{html.escape(caption)}</figcaption></figure>"


def size_figure(report: Report) -> str:
    """Horizontal bars: each layer's bytes before and after the passes."""
    layers = report.layers
    fig, ax = _subplots(9, 1.2 + 0.28 * len(layers))
    rows = range(len(layers))
    ax.barh([r + 0.2 for r in rows], [layer.bytes_before / 1024 for layer in layers], height=0.4, label="before", color="#9bb")
    ax.barh([r - 0.2 for r in rows], [layer.bytes_after / 1024 for layer in layers], height=0.4, label="after", color="#357")
    ax.set_yticks(list(rows), [layer.layer for layer in layers], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("KiB")
    ax.legend(loc="lower right")
    total = f"{report.weight_bytes_before / 1024:.0f} KiB -> {report.weight_bytes_after / 1024:.0f} KiB"
    return _figure(_png(fig), f"Weight bytes per layer before and after the passes ({total} in all).")


def error_figure(report: Report) -> str:
    """One bar chart per (pass, metric): the per-layer error or sensitivity the pass measured."""
    groups: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for e in report.layer_errors:
        groups.setdefault((e.pass_name, e.metric), []).append((e.layer, e.value))
    parts = []
    for (pass_name, metric), rows in groups.items():
        fig, ax = _subplots(9, 1.2 + 0.28 * len(rows))
        ax.barh(range(len(rows)), [v for _, v in rows], color="#a53")
        ax.set_yticks(list(range(len(rows))), [name for name, _ in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(metric)
        parts.append(_figure(_png(fig), f"{metric} per layer, measured by pass '{pass_name}'."))
    return "".join(parts)


def pareto_figure(points: Sequence[Mapping[str, Any]], front: Sequence[Mapping[str, Any]] | None = None, *,
                  x: str = "size_bytes", y: str = "error", xlabel: str = "artifact weight bytes",
                  ylabel: str = "quality loss (lower is better)", caption: str = "Search candidates and their Pareto front.") -> str:
    """A ``<figure>`` (inlined PNG) of search candidates and their Pareto front.

    ``points``: mappings with keys ``x`` and ``y`` (numbers) and optionally ``label``; ``front``:
    the non-dominated ones (drawn as a step line through them, labelled), default: those of
    ``points`` with ``on_front`` true. Both axes are "lower is better".
    """
    chosen = list(front) if front is not None else [p for p in points if p.get("on_front")]
    fig, ax = _subplots(7, 4.5)
    ax.scatter([p[x] for p in points], [p[y] for p in points], color="#999", label="candidates", zorder=2)
    ordered = sorted(chosen, key=lambda p: p[x])
    if ordered:
        ax.step([p[x] for p in ordered], [p[y] for p in ordered], where="post", color="#c30", zorder=3)
        ax.scatter([p[x] for p in ordered], [p[y] for p in ordered], color="#c30", label="Pareto front", zorder=4)
        for p in ordered:
            if p.get("label"):
                ax.annotate(str(p["label"]), (p[x], p[y]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    return _figure(_png(fig), caption)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], classes: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f'<tr class="{classes[i] if classes else ""}">' + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
        for i, row in enumerate(rows))
    return f"<table><tr>{head}</tr>{body}</table>"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def render_html(report: Report) -> str:
    """The whole page for ``report``."""
    v = report.verification
    if not v.passed:
        status = "verification FAILED"
    else:  # never more than what was checked: gates measured on the host do not make an executed artifact
        status = "verified" if v.executed else f"gates passed on the host; artifact not executed: {v.reason}"
    summary = _table(["", ""], [
        ["model", f"{report.model.name} ({report.model.parameters} -> {report.model.compiled_parameters} parameters)"],
        ["target", report.target], ["artifact", report.artifact or "(none)"], ["status", status],
        ["weights", f"{report.weight_bytes_before} -> {report.weight_bytes_after} bytes"],
        ["cache", report.cache.get("status", "disabled")],
        ["versions", ", ".join(f"{k} {val}" for k, val in sorted(report.versions.items()))],
    ])
    gates = _table(["check", "result", "measured", "threshold", "detail"],
                   [[g.gate, "pass" if g.passed else "FAIL", _number(g.measured), _number(g.threshold), g.detail] for g in v.gates],
                   ["pass" if g.passed else "fail" for g in v.gates])
    passes = _table(["pass", "lossy", "seconds", "nodes", "weight bytes", "skipped"],
                    [[p.name, p.lossy, f"{p.seconds:.2f}", f"{p.nodes_before} -> {p.nodes_after}",
                      f"{p.weight_bytes_before} -> {p.weight_bytes_after}", p.skipped] for p in report.passes])
    sections = [f"<h1>slmc report: {html.escape(report.model.name)} for {html.escape(report.target)}</h1>", summary,
                "<h2>Quality gates</h2>", gates if v.gates else "<p>No checks were executed.</p>",
                f"<p>{html.escape(v.how)}</p>", "<h2>Passes</h2>", passes]
    if report.layers:
        sections += ["<h2>Size by layer</h2>", size_figure(report)]
    if report.layer_errors:
        sections += ["<h2>Per-layer error</h2>", error_figure(report)]
    if report.search:
        sections += ["<h2>Search</h2>", pareto_figure([p.model_dump() for p in report.search])]
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>slmc report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n")
