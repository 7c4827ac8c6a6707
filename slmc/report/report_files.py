"""A compile's report as files: ``report.json`` (``slmc.report.report_json``) and the self-contained
``report.html`` (``slmc.report.html``) side by side in one directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slmc.artifact.layout import read_manifest
from slmc.report.html import render_html
from slmc.report.report_json import REPORT_HTML, REPORT_JSON, Report, build_report, with_evaluation


def write_report(report: Report, directory: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``directory`` (created if missing); return both paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / REPORT_JSON, out / REPORT_HTML
    json_path.write_text(json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path


def write_eval_report(artifact: str | Path, result: dict[str, Any], directory: str | Path) -> tuple[Path, Path]:
    """``slmc eval ARTIFACT --report DIR``: the artifact's compile report (from its manifest) with the
    evaluation ``result`` added as its measured quality. Precondition: ``artifact`` is an artifact
    directory (``ArtifactError`` naming it otherwise)."""
    report = build_report(read_manifest(Path(artifact)), artifact)
    return write_report(with_evaluation(report, result), directory)
