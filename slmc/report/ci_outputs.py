"""What ``slmc compile`` and ``slmc eval`` write for CI besides their exit code and ``--json``:
``--report DIR`` (report.json + report.html) and ``--junit FILE`` (docs/reports.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slmc.artifact.manifest import GateResult
from slmc.errors import ExecutionRequiredError, InputError, KernelCheckError, SlmcError, VerificationError
from slmc.report.junit import write_junit
from slmc.spec.recipe import Gates
from slmc.report.report_files import write_report
from slmc.report.report_json import Report, build_report
from slmc.verify.numerics import gate_results


def compile_suite(model: str | None, target: str | None) -> str:
    return f"slmc.compile.{model or 'default'}.{target or 'default'}"


def _write(report: Report, report_dir: Path | None, junit_file: Path | None, seconds: float,
           execution_required: bool = False) -> None:
    if report_dir is not None:
        write_report(report, report_dir)
    if junit_file is not None:
        v = report.verification
        write_junit(junit_file, compile_suite(report.model.name, report.target), v.gates, not_executed=v.not_executed,
                    seconds=seconds, execution_required=execution_required)


def compile_outputs(result: Any, report_dir: Path | None, junit_file: Path | None) -> None:
    """After a successful compile (``CompileResult``): the report and the JUnit file, as asked."""
    report = build_report(result.manifest, result.artifact, result.cache, result.timings)
    _write(report, report_dir, junit_file, result.timings.get("total", 0.0))


def compile_failure_outputs(exc: SlmcError, report_dir: Path | None, junit_file: Path | None, suite: str,
                            seconds: float) -> None:
    """After a failed compile: the report (when the error carries the discarded artifact's manifest,
    as a compile's ``VerificationError`` does: a failed gate, check or kernel check, or an artifact
    required to execute that did not) and the JUnit file (the checks, with the failed ones as
    failures; else one ``compile`` error case in ``suite``, of ``seconds``)."""
    manifest = exc.manifest if isinstance(exc, VerificationError) else None
    if manifest is None:
        if junit_file is not None:
            write_junit(junit_file, suite, [], error=f"{type(exc).__name__}: {exc}", seconds=seconds)
        return
    report = build_report(manifest, None, None, exc.timings or {"total": round(seconds, 3)})
    if isinstance(exc, KernelCheckError) or manifest.verification.pending:
        if report_dir is not None:
            write_report(report, report_dir)
        if junit_file is not None:
            write_junit(junit_file, compile_suite(report.model.name, report.target), [], error=f"{type(exc).__name__}: {exc}",
                        seconds=seconds)
        return
    _write(report, report_dir, junit_file, exc.timings.get("total", seconds),
           execution_required=isinstance(exc, ExecutionRequiredError))


def parse_gates(options: tuple[str, ...]) -> Gates:
    """``--gate NAME=VALUE`` options, validated like a recipe's ``verify.gates`` (unknown names and bad values: exit 2)."""
    from pydantic import ValidationError

    data: dict[str, str] = {}
    for option in options:
        name, sep, value = option.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--gate {option!r}: expected NAME=VALUE, e.g. max_perplexity_increase=5%")
        data[name.strip()] = value.strip()
    try:
        return Gates.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InputError(f"--gate: {problems} (gates: {', '.join(Gates.model_fields)})") from exc


def eval_gates(result: dict[str, Any], gates: Gates) -> list[GateResult]:
    """The gates measured on an ``slmc eval`` result against ``--reference``; ``InputError`` for one it cannot measure."""
    comparison = result.get("comparison")
    if comparison is None:
        raise InputError("quality gates compare with a reference: give --reference")
    metrics = {"top1_agreement": comparison.get("top1_agreement"), "max_abs_error": comparison.get("max_logit_error"),
               "cosine": comparison.get("min_cosine")}
    names = {"min_top1_agreement": "top1_agreement", "max_abs_error": "max_abs_error", "min_cosine": "cosine"}
    missing = [n for n, key in names.items() if getattr(gates, n) is not None and metrics[key] is None]
    ppl, ref_ppl = result.get("perplexity"), result.get("reference", {}).get("perplexity")
    if gates.max_perplexity_increase is not None and (ppl is None or ref_ppl is None):
        missing.append("max_perplexity_increase")
    # every other gate (the NPU build gates) is measured by a compile, never by slmc eval
    missing += [n for n in Gates.model_fields if n not in {*names, "max_perplexity_increase"} and getattr(gates, n) not in (None, False)]
    if missing:
        raise InputError(f"gate(s) {', '.join(missing)} cannot be measured for a {result.get('task')} model by slmc eval")
    found = gate_results(gates, metrics)
    if gates.max_perplexity_increase is not None:
        increase = ppl / ref_ppl - 1.0
        found.append(GateResult(gate="max_perplexity_increase", passed=increase <= gates.max_perplexity_increase, measured=increase,
                                threshold=gates.max_perplexity_increase, detail=f"perplexity {ppl:.4f} vs reference {ref_ppl:.4f}"))
    return found


def check_eval_gates(result: dict[str, Any], options: tuple[str, ...], junit_file: Path | None,
                     suite: str) -> VerificationError | None:
    """Measure the ``--gate`` options on an eval ``result`` (adding ``result["gates"]``), write
    ``junit_file``; the error to exit with when a gate failed, else None."""
    if not options:
        if junit_file is not None:
            raise InputError("--junit needs quality gates: give --gate NAME=VALUE (e.g. max_perplexity_increase=5%)")
        return None
    gates = parse_gates(options)
    measured = eval_gates(result, gates)
    result["gates"] = [g.model_dump() for g in measured]
    if junit_file is not None:
        write_junit(junit_file, suite, measured)
    failed = [g for g in measured if not g.passed]
    if not failed:
        return None
    return VerificationError("quality gate(s) not met: " + "; ".join(
        f"{g.gate} measured {g.measured:.6g}, threshold {g.threshold:g}" for g in failed), {"gates": result["gates"]})
