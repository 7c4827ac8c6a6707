"""``--junit FILE``: quality gates as JUnit XML test cases, the format CI systems display as tests.

One ``<testcase>`` per check (``classname`` = the suite, e.g. ``slmc.compile.tiny-lm.host``),
with a ``<failure>`` when it failed; a compile that failed before verification is one test
case ``compile`` with an ``<error>``; verification that was not executed here is one
``<skipped>`` test case with the reason. Schema: the common Jenkins/Surefire subset
(testsuites > testsuite > testcase > failure|error|skipped) that GitHub, GitLab and Jenkins read.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from slmc.artifact.manifest import GateResult


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def junit_xml(suite: str, gates: Sequence[GateResult], error: str | None = None, skipped: str | None = None,
              seconds: float = 0.0) -> str:
    """The XML document for ``gates`` (see the module docstring)."""
    root = ET.Element("testsuites")
    cases: list[ET.Element] = []
    if error is not None:
        case = ET.Element("testcase", name="compile", classname=suite)
        ET.SubElement(case, "error", message=error.splitlines()[0] if error else "error").text = error
        cases.append(case)
    elif skipped is not None and not gates:
        case = ET.Element("testcase", name="verification", classname=suite)
        ET.SubElement(case, "skipped", message=skipped)
        cases.append(case)
    for g in gates:
        case = ET.Element("testcase", name=g.gate, classname=suite)
        ET.SubElement(case, "system-out").text = (f"measured {_number(g.measured)}, threshold {_number(g.threshold)}"
                                                  + (f"; {g.detail}" if g.detail else ""))
        if not g.passed:
            ET.SubElement(case, "failure", message=f"{g.gate}: measured {_number(g.measured)}, threshold {_number(g.threshold)}",
                          type="QualityGateFailed").text = g.detail or None
        cases.append(case)
    failures = sum(1 for g in gates if not g.passed)
    testsuite = ET.SubElement(root, "testsuite", name=suite, tests=str(len(cases)), failures=str(failures),
                              errors=str(int(error is not None)), skipped=str(int(skipped is not None and not gates and error is None)),
                              time=f"{seconds:.3f}")
    testsuite.extend(cases)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: str | Path, suite: str, gates: Sequence[GateResult], error: str | None = None, skipped: str | None = None,
                seconds: float = 0.0) -> Path:
    out = Path(path)
    if out.parent != Path(""):
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(junit_xml(suite, gates, error, skipped, seconds), encoding="utf-8")
    return out
