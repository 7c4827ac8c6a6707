"""``report.html``: one self-contained page (matplotlib PNGs inlined as base64, no external files).

It answers, at the top, how big (weights and files in MiB, with ratios, and the logical parameter
count), how accurate (the compressed model against the original as the compile measured it, and
an ``slmc eval --report`` evaluation) and how fast (the manifest's speed record, else "not
measured"). Then: quality gates, the per-layer table (format, bits, bytes, error where measured),
figures (weight bytes per layer; per-layer error or sensitivity on a log scale; a search's Pareto
front, ``pareto_figure``, also used on its own by ``slmc search``) and the passes. The figures
leave out normalization and rotary-embedding layers (``CHART_SKIPPED_LAYERS``): they hold a few
hundred bytes and no measured error, and would only crowd the charts; the table lists them.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from slmc.artifact.gpu_kernel_checks import GpuKernelChecks
from slmc.report.report_json import LayerDetail, Report

MIB = 1024 * 1024
# module-path components (case-insensitive substrings) of layers the figures leave out (see the docstring)
CHART_SKIPPED_LAYERS = ("norm", "rotary", "rope", "inv_freq")

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


def charted(layer: str) -> bool:
    """Whether the figures draw ``layer`` (not a normalization or rotary-embedding layer)."""
    return not any(part in component.lower() for component in layer.split(".") for part in CHART_SKIPPED_LAYERS)


def mib(size: float) -> str:
    """``size`` bytes in MiB, three significant digits."""
    return f"{size / MIB:.3g} MiB"


def ratio(before: float, after: float) -> str:
    """``after`` against ``before``: how many times smaller and what percentage remains."""
    if before <= 0:
        return "no bytes before"
    if after <= 0:
        return "all removed"
    return f"{before / after:.2f}x smaller ({100 * after / before:.1f}% of the original)"


def size_figure(report: Report) -> str:
    """Horizontal bars: each layer's bytes before and after the passes (norm/rotary layers left out)."""
    layers = [layer for layer in report.layers if charted(layer.layer)]
    fig, ax = _subplots(9, 1.2 + 0.28 * len(layers))
    rows = range(len(layers))
    ax.barh([r + 0.2 for r in rows], [layer.bytes_before / 1024 for layer in layers], height=0.4, label="before", color="#9bb")
    ax.barh([r - 0.2 for r in rows], [layer.bytes_after / 1024 for layer in layers], height=0.4, label="after", color="#357")
    ax.set_yticks(list(rows), [layer.layer for layer in layers], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("KiB")
    ax.legend(loc="lower right")
    total = f"{mib(report.weight_bytes_before)} -> {mib(report.weight_bytes_after)}"
    left_out = len(report.layers) - len(layers)
    note = f"; {left_out} normalization/rotary layers not drawn" if left_out else ""
    return _figure(_png(fig), f"Weight bytes per layer before and after the passes ({total} in all{note}).")


def error_figure(report: Report) -> str:
    """One bar chart per (pass, metric), log scale: the per-layer error or sensitivity the pass
    measured (norm/rotary layers left out; a zero cannot be drawn on a log scale, the caption counts them)."""
    groups: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for e in report.layer_errors:
        if charted(e.layer):
            groups.setdefault((e.pass_name, e.metric), []).append((e.layer, e.value))
    parts = []
    for (pass_name, metric), measured in groups.items():
        rows = [(name, value) for name, value in measured if value > 0]
        zeros = len(measured) - len(rows)
        note = f" {zeros} layer(s) measured exactly 0, not drawn." if zeros else ""
        if not rows:
            parts.append(f"<p>{html.escape(metric)} measured by pass '{html.escape(pass_name)}': 0 for every layer.</p>")
            continue
        fig, ax = _subplots(9, 1.2 + 0.28 * len(rows))
        ax.barh(range(len(rows)), [v for _, v in rows], color="#a53")
        ax.set_xscale("log")
        ax.set_yticks(list(range(len(rows))), [name for name, _ in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(f"{metric} (log scale)")
        ax.grid(axis="x", which="both", alpha=0.3)
        parts.append(_figure(_png(fig), f"{metric} per layer, measured by pass '{pass_name}' (log scale).{note}"))
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
    return f"<table>{f'<tr>{head}</tr>' if any(header) else ''}{body}</table>"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _size_rows(report: Report) -> list[list[str]]:
    """How big: weights and artifact files in MiB with ratios, and the parameter count."""
    files = sum(report.files.values())
    rows = [["weights", f"{mib(report.weight_bytes_before)} -> {mib(report.weight_bytes_after)}: "
                        f"{ratio(report.weight_bytes_before, report.weight_bytes_after)}"],
            ["parameters", f"{report.parameters_before:,} -> {report.parameters_after:,} "
                           "(quantization stores weights in fewer bits; it removes none)"]]
    if files:
        rows.append(["artifact files", f"{mib(files)} in {len(report.files)} files ("
                     + ", ".join(f"{name} {mib(size)}" for name, size in sorted(report.files.items())) + ")"])
    return rows


def _quality_rows(report: Report) -> list[list[str]]:
    """How accurate: what the compile measured against the original, and an ``slmc eval --report``."""
    q = report.quality
    rows = []
    m = q.compressed_vs_original
    if m is not None:
        rows.append(["vs the original (compile)", f"cosine {m.cosine:.6f} (lowest row {m.min_row_cosine:.6f}), "
                     f"top-1 agreement {m.top1_agreement:.4f}, max abs logit error {m.max_abs_error:.4g}"])
    ppl = q.perplexity
    if ppl is not None:
        rows.append(["perplexity (compile)", f"{ppl.artifact:.4f} vs original {ppl.original:.4f} "
                     f"({100 * ppl.increase:+.2f}%, {ppl.tokens_scored} tokens)"])
    e = q.evaluation
    if e is not None:
        if e.perplexity is not None:
            against = f" vs {e.reference} {e.reference_perplexity:.4f} ({100 * (e.perplexity / e.reference_perplexity - 1):+.2f}%)" \
                if e.reference_perplexity else ""
            rows.append([f"perplexity on {e.text} (eval)", f"{e.perplexity:.4f}{against}, {e.tokens_scored} tokens"])
        if e.comparison:
            rows.append([f"vs {e.reference} (eval)", ", ".join(f"{k.replace('_', ' ')} {v:.6g}" for k, v in e.comparison.items())])
        rows += [[f"gate {g.gate} (eval)", f"{'pass' if g.passed else 'FAIL'}: measured {_number(g.measured)}, "
                  f"threshold {_number(g.threshold)}"] for g in e.gates]
    if not rows:
        rows.append(["quality", "not measured (verification was not executed)"])
    return rows


def _speed_rows(report: Report) -> list[list[str]]:
    """How fast: the manifest's speed record, else "not measured"."""
    s = report.speed
    if s is None:
        return [["speed", "not measured"]]
    def rate(value: float | None) -> str:
        return "not measured" if value is None else f"{value:.1f} tokens/s"
    rows = [["decode", rate(s.decode_tokens_per_second)], ["prefill", rate(s.prefill_tokens_per_second)]]
    return rows + ([["measured", s.detail]] if s.detail else [])


def _layer_rows(rows: list[LayerDetail]) -> list[list[str]]:
    return [[r.layer, r.format, "" if r.bits_per_weight is None else f"{r.bits_per_weight:g}",
             f"{r.bytes_before:,}", f"{r.bytes_after:,}",
             f"{r.bytes_before / r.bytes_after:.2f}x" if r.bytes_before != r.bytes_after and r.bytes_after > 0 else
             ("unchanged" if r.bytes_before == r.bytes_after else "removed"),
             "" if r.error is None else f"{r.error:.4g} ({r.error_metric})"] for r in rows]


def _gpu_kernel_table(checks: GpuKernelChecks) -> str:
    """One row per OpenCL kernel: executed on PoCL (its error against the host build) or compiled only (why)."""
    rows = [[r.kernel, r.status, _number(r.max_rel_error), "" if r.passed is None else ("pass" if r.passed else "FAIL"), r.reason or ""]
            for r in checks.per_kernel]
    classes = ["fail" if r.passed is False else "pass" for r in checks.per_kernel]
    return _table(["kernel", "status", "max relative error", "result", "reason"], rows, classes)


def render_html(report: Report) -> str:
    """The whole page for ``report``."""
    v = report.verification
    if not v.passed:
        status = "verification FAILED"
    else:  # never more than what was checked: gates measured on the host do not make an executed artifact
        status = "verified" if v.executed else f"gates passed on the host; artifact not executed: {v.reason}"
    summary = _table(["", ""], [
        ["model", report.model.name],
        ["target", report.target], ["artifact", report.artifact or "(none)"], ["status", status],
        ["cache", report.cache.get("status", "disabled")],
        ["versions", ", ".join(f"{k} {val}" for k, val in sorted(report.versions.items()))],
    ])
    gates = _table(["check", "result", "measured", "threshold", "detail"],
                   [[g.gate, "pass" if g.passed else "FAIL", _number(g.measured), _number(g.threshold), g.detail] for g in v.gates],
                   ["pass" if g.passed else "fail" for g in v.gates])
    passes = _table(["pass", "lossy", "seconds", "nodes", "weight bytes", "skipped"],
                    [[p.name, p.lossy, f"{p.seconds:.2f}", f"{p.nodes_before} -> {p.nodes_after}",
                      f"{p.weight_bytes_before} -> {p.weight_bytes_after}", p.skipped] for p in report.passes])
    layers = _table(["layer", "format", "bits", "bytes before", "bytes after", "ratio", "error"], _layer_rows(report.layer_table))
    sections = [f"<h1>slmc report: {html.escape(report.model.name)} for {html.escape(report.target)}</h1>",
                '<h2 id="size">How big</h2>', _table(["", ""], _size_rows(report)),
                '<h2 id="quality">How accurate</h2>', _table(["", ""], _quality_rows(report)),
                '<h2 id="speed">How fast</h2>', _table(["", ""], _speed_rows(report)),
                "<h2>Compile</h2>", summary,
                "<h2>Quality gates</h2>", gates if v.gates else "<p>No checks were executed.</p>",
                f"<p>{html.escape(v.how)}</p>"]
    if v.gpu_kernels is not None:
        sections += ['<h2 id="gpu-kernels">GPU kernels</h2>', f"<p>{html.escape(v.gpu_kernels.device)}; reference: "
                     f"{html.escape(v.gpu_kernels.reference)}</p>", _gpu_kernel_table(v.gpu_kernels)]
    if report.layer_table:
        sections += ['<h2 id="layers">Per-layer table</h2>', layers]
    if report.layers:
        sections += ["<h2>Size by layer</h2>", size_figure(report)]
    if report.layer_errors:
        sections += ["<h2>Per-layer error</h2>", error_figure(report)]
    sections += ["<h2>Passes</h2>", passes]
    if report.search:
        sections += ["<h2>Search</h2>", pareto_figure([p.model_dump() for p in report.search])]
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>slmc report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n")
