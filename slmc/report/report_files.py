"""A compile's report as files: ``report.json`` (``slmc.report.report_json``) and the self-contained
``report.html`` (``slmc.report.html``) side by side in one directory."""

from __future__ import annotations

import json
from pathlib import Path

from slmc.report.html import render_html
from slmc.report.report_json import REPORT_HTML, REPORT_JSON, Report


def write_report(report: Report, directory: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``directory`` (created if missing); return both paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / REPORT_JSON, out / REPORT_HTML
    json_path.write_text(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path
