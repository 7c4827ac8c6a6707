"""Vela's reason for refusing a TOSA operator: its own documented constraints for that operator.

Vela 5.2 compiles every TOSA graph with its C++ core Regor (the Python ``tosa_supported_operators``
belongs to the deprecated legacy core, which TOSA input never reaches). Regor checks each operator
and, when one cannot run on the NPU, stops with ``Non-passthrough operation (<op>) could not run on
NPU``, naming its internal operator type and not the check that failed, even with ``--verbose-all``
(no option or Python API of Vela 5.2 reports the failed check for TOSA input). What Vela does publish
is the constraint list its checks implement, per accelerator family and TOSA operator: the report
``vela --supported-ops-report`` writes (``SUPPORTED_OPS.md``; sections "Ethos-U55 and Ethos-U65
TOSA ..." with a table of the supported operators and each operator's specific constraints, and
"Ethos-U85 TOSA Operator Support": the TOSA 1.0 PRO-INT 8k baseline and its exceptions). A refusal
is recorded with Regor's message, the TOSA operator it names (Regor's type matched to the graph's
operators), whether Vela supports that operator on the accelerator at all, and Vela's constraints for
it: the specific reason Vela gives, in Vela's words.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from slmc.errors import ToolchainError
from slmc.npu.vela import VelaResult, run_vela, vela_version

REPORT_FILE = "SUPPORTED_OPS.md"
# accelerator_config prefix -> the report's section name for its TOSA support
FAMILIES = {"ethos-u55": "Ethos-U55 and Ethos-U65", "ethos-u65": "Ethos-U55 and Ethos-U65", "ethos-u85": "Ethos-U85"}
_TABLE_ROW = re.compile(r"^\| ([A-Z0-9_]+) \|")
_SPECIFIC = re.compile(r"^### (.+) TOSA ([A-Z0-9_]+) Constraints$")
_BULLET = re.compile(r"^(\s*)- (.+)$")


@dataclass
class TosaSupport:
    """One accelerator family's TOSA support as Vela's report states it."""

    family: str
    supported: frozenset[str] | None  # None: the report lists no operator table (the whole baseline is supported)
    generic: list[str] = field(default_factory=list)
    specific: dict[str, list[str]] = field(default_factory=dict)


def _bullets(lines: Sequence[str]) -> list[str]:
    out = []
    for line in lines:
        match = _BULLET.match(line)
        if match:
            out.append(("  " * (len(match.group(1)) // 2)) + match.group(2).strip())
    return out


def _sections(text: str) -> dict[str, list[str]]:
    """The report's ``##``/``###`` headings -> the lines under each."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("## ") or line.startswith("### "):
            current = sections.setdefault(line.lstrip("# ").strip(), [])
        else:
            current.append(line)
    return sections


def parse_report(text: str, family: str) -> TosaSupport:
    """``family``'s TOSA support from the text of Vela's ``SUPPORTED_OPS.md``."""
    sections = _sections(text)
    table = sections.get(f"{family} TOSA Summary Table")
    if table is not None:
        supported = frozenset(m.group(1) for m in map(_TABLE_ROW.match, table) if m and m.group(1) != "Operator")
        specific = {}
        for heading, lines in sections.items():
            match = _SPECIFIC.match("### " + heading)
            if match and match.group(1) == family:
                specific[match.group(2)] = _bullets(lines)
        return TosaSupport(family, supported, _bullets(sections.get(f"{family} TOSA Generic Constraints", [])), specific)
    overview = sections.get(f"{family} TOSA Operator Support")
    if overview is None:
        raise ToolchainError(f"Vela {vela_version()}'s {REPORT_FILE} has no TOSA section for {family}")
    return TosaSupport(family, None, _bullets(overview))


@lru_cache(maxsize=None)
def _report_text() -> str:
    with tempfile.TemporaryDirectory(prefix="slmc-vela-ops-") as work:
        done = run_vela(["--supported-ops-report"], "--supported-ops-report", cwd=Path(work))
        report = Path(work) / REPORT_FILE
        if done.returncode != 0 or not report.is_file():
            raise ToolchainError(f"vela --supported-ops-report did not write {REPORT_FILE} (exit {done.returncode}): "
                                 f"{done.stderr.strip()[-300:]}")
        return report.read_text(encoding="utf-8")


def tosa_support(accelerator_config: str) -> TosaSupport:
    """Vela's documented TOSA support for ``accelerator_config`` (e.g. ``ethos-u55-256``)."""
    prefix = "-".join(accelerator_config.split("-")[:2])
    if prefix not in FAMILIES:
        raise ToolchainError(f"accelerator config '{accelerator_config}' is not an Ethos-U family Vela documents "
                             f"(known: {sorted(FAMILIES)})")
    return parse_report(_report_text(), FAMILIES[prefix])


def _normalized(name: str) -> str:
    return name.upper().replace("_", "")


def tosa_operator(vela_operator: str | None, tosa_operators: Sequence[str]) -> str | None:
    """The graph's TOSA operator Regor's operator type names: equal ignoring case and underscores
    (``Conv2D`` = ``CONV2D``), else the only one ending with it (``Div`` = ``INTDIV``); None if not one."""
    if vela_operator is None:
        return None
    wanted = _normalized(vela_operator)
    for match in (lambda name: _normalized(name) == wanted, lambda name: _normalized(name).endswith(wanted)):
        found = sorted({name for name in tosa_operators if match(name)})
        if len(found) == 1:
            return found[0]
    return None


def refusal_reason(message: str, operator: str | None, support: TosaSupport) -> tuple[bool | None, list[str], str]:
    """``(supported, constraints, reason)`` for Regor's ``message`` about TOSA ``operator`` on ``support``'s family."""
    version = vela_version()
    if support.supported is None:
        constraints = support.generic
        return None, constraints, (f"{message}: Vela {version}'s TOSA support on {support.family}: "
                                   + "; ".join(constraints))
    if operator is None:
        return None, support.generic, (f"{message}: the operator is not one of the graph's TOSA operators; Vela {version}'s "
                                       f"generic TOSA constraints on {support.family}: " + "; ".join(support.generic))
    if operator not in support.supported:
        return False, [], (f"{message}: TOSA {operator} is not among the {len(support.supported)} TOSA operators Vela {version} "
                           f"supports on {support.family} (its supported-operators report), and TOSA has no CPU fallback")
    constraints = support.specific.get(operator, [])
    if not constraints:
        return True, support.generic, (f"{message}: TOSA {operator} is supported on {support.family} under Vela {version}'s "
                                       "generic TOSA constraints only: " + "; ".join(support.generic))
    return True, constraints, (f"{message}: TOSA {operator} on {support.family} must meet Vela {version}'s constraints: "
                               + "; ".join(constraints))


def refusal_record(partition: int, layer: str, tosa_operators: list[str], result: VelaResult,
                   accelerator_config: str) -> dict[str, Any]:
    """The manifest's ``VelaRefusal`` (``slmc.artifact.npu_toolchain``) for a refused ``result``."""
    operator = tosa_operator(result.refused_operator, tosa_operators)
    message = result.reason or ""
    supported, constraints, reason = refusal_reason(message, operator, tosa_support(accelerator_config))
    return {"partition": partition, "layer": layer, "tosa_operators": tosa_operators, "operator": result.refused_operator,
            "tosa_operator": operator, "supported_by_vela": supported, "vela_constraints": constraints,
            "vela_message": message, "reason": reason}
