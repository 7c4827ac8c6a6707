"""``--junit FILE``: quality gates as JUnit XML test cases, the format CI systems display as tests.

One ``<testcase>`` per executed check (``classname`` = the suite, e.g. ``slmc.compile.tiny-lm.host``),
with a ``<failure>`` when it failed; one per check that did not run (``Verification.not_executed``:
the artifact was not executed, e.g. for a target this machine cannot run) with ``<skipped>`` and
the reason, or, when execution was required (``--require-execution``), a ``<failure>`` of type
``ExecutionRequired``; a compile that failed before verification is one test case ``compile``
with an ``<error>``. Schema: the common Jenkins/Surefire subset
(testsuites > testsuite > testcase > failure|error|skipped) that GitHub, GitLab and Jenkins read.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from slmc.artifact.manifest import CheckNotExecuted, GateResult


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def junit_xml(suite: str, gates: Sequence[GateResult], error: str | None = None,
              not_executed: Sequence[CheckNotExecuted] = (), seconds: float = 0.0, execution_required: bool = False) -> str:
    """The XML document for ``gates`` and ``not_executed`` (see the module docstring)."""
    root = ET.Element("testsuites")
    cases: list[ET.Element] = []
    failures = skipped = 0
    if error is not None:
        case = ET.Element("testcase", name="compile", classname=suite)
        ET.SubElement(case, "error", message=error.splitlines()[0] if error else "error").text = error
        cases.append(case)
    for g in gates:
        case = ET.Element("testcase", name=g.gate, classname=suite)
        where = f"; measured on the {g.where}" if g.where else ""
        ET.SubElement(case, "system-out").text = (f"measured {_number(g.measured)}, threshold {_number(g.threshold)}"
                                                  + (f"; {g.detail}" if g.detail else "") + where)
        if not g.passed:
            ET.SubElement(case, "failure", message=f"{g.gate}: measured {_number(g.measured)}, threshold {_number(g.threshold)}",
                          type="QualityGateFailed").text = g.detail or None
            failures += 1
        cases.append(case)
    for check in not_executed:
        case = ET.Element("testcase", name=check.check, classname=suite)
        if execution_required:
            ET.SubElement(case, "failure", message=f"{check.check}: required, not executed: {check.reason}",
                          type="ExecutionRequired").text = check.reason
            failures += 1
        else:
            ET.SubElement(case, "skipped", message=check.reason)
            skipped += 1
        cases.append(case)
    testsuite = ET.SubElement(root, "testsuite", name=suite, tests=str(len(cases)), failures=str(failures),
                              errors=str(int(error is not None)), skipped=str(skipped), time=f"{seconds:.3f}")
    testsuite.extend(cases)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: str | Path, suite: str, gates: Sequence[GateResult], error: str | None = None,
                not_executed: Sequence[CheckNotExecuted] = (), seconds: float = 0.0, execution_required: bool = False) -> Path:
    out = Path(path)
    if out.parent != Path(""):
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(junit_xml(suite, gates, error, not_executed, seconds, execution_required), encoding="utf-8")
    return out
