"""report.json (versioned schema), report.html (self-contained, with plots), --report/--junit on compile and eval."""

import json
import re
import xml.etree.ElementTree as ET

import jsonschema
import pytest
from click.testing import CliRunner

from slmc.artifact.manifest import LayerSize, PassReport
from slmc.report.report_files import write_report
from slmc.report.report_json import REPORT_HTML, REPORT_JSON, SCHEMA_VERSION, build_report, layer_sizes, report_schema
from slmc.report.html import pareto_figure, render_html

GPTQ_RECIPE = """\
passes: [{quantize: {bits: 4, group_size: 32, method: gptq}}]
calibration: {text: stdlib-train, num_samples: 1, sequence_length: 16}
"""


def test_report_of_a_compile_matches_its_schema(cached_compile, tmp_path):
    result = cached_compile.result
    report = build_report(result.manifest, result.artifact, result.cache, result.timings)
    data = report.to_json()
    jsonschema.validate(data, report_schema())
    assert data["schema"] == "slmc-report" and data["schema_version"] == SCHEMA_VERSION
    assert data["ok"] and data["cache"]["status"] == "miss" and data["model"]["name"] == "tiny-lm"
    assert {g["gate"] for g in data["verification"]["gates"]} == {"artifact_vs_eager", "decode", "min_cosine"}
    assert data["layers"] and sum(row["bytes_before"] for row in data["layers"]) == data["weight_bytes_before"]
    json_path, html_path = write_report(report, tmp_path / "report")
    assert json.loads(json_path.read_text()) == data and html_path.name == REPORT_HTML and json_path.name == REPORT_JSON


def test_html_is_self_contained_with_plots(cached_compile):
    result = cached_compile.result
    page = render_html(build_report(result.manifest, result.artifact, result.cache))
    assert page.startswith("<!DOCTYPE html>") and "Size by layer" in page and "min_cosine" in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) >= 1
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from elsewhere


def test_layer_sizes_group_tensors_by_module():
    import torch

    before = {"a.q.weight": torch.zeros(4, 4), "a.q.bias": torch.zeros(4), "emb.weight": torch.zeros(2, 2)}
    after = {"a.q.qweight": torch.zeros(4, 2, dtype=torch.uint8), "a.q.scales": torch.zeros(4), "emb.weight": torch.zeros(2, 2)}
    assert layer_sizes(before, after) == [{"layer": "a.q", "bytes_before": 80, "bytes_after": 24},
                                          {"layer": "emb", "bytes_before": 16, "bytes_after": 16}]


def test_per_layer_error_from_a_calibrated_quantize_pass(cached_compile, tmp_path):
    """GPTQ reports each layer's output error; the report lists and plots it."""
    from slmc.driver.compress import compress
    from slmc.frontend.model_source import load_model
    from slmc.spec.recipe import load_recipe
    from slmc.spec.target import load_target

    (tmp_path / "gptq.yaml").write_text(GPTQ_RECIPE)
    compressed = compress(load_model("tiny-lm"), load_recipe(tmp_path / "gptq.yaml"), load_target("host"))
    manifest = cached_compile.result.manifest.model_copy(update={
        "passes": [PassReport.model_validate(r) for r in compressed.reports],
        "layers": [LayerSize.model_validate(row) for row in layer_sizes(compressed.original.tensors(), compressed.final.tensors())]})
    report = build_report(manifest, None)
    errors = [e for e in report.layer_errors if e.metric == "output_error"]
    assert len(errors) == compressed.reports[0]["stats"]["layers_quantized"] - 1  # the embedding has no calibration error
    assert all(e.value >= 0 and e.pass_name == "quantize" for e in errors)
    assert report.weight_bytes_before > sum(row.bytes_after for row in report.layers)
    assert "Per-layer error" in render_html(report) and not report.ok  # no artifact


def test_pareto_figure_for_search_results():
    points = [{"label": "int8", "size_bytes": 2e6, "error": 0.01, "on_front": True},
              {"label": "int4", "size_bytes": 1e6, "error": 0.05, "on_front": True},
              {"label": "int4-bad", "size_bytes": 1.5e6, "error": 0.2, "on_front": False}]
    figure = pareto_figure(points)
    assert figure.startswith("<figure><img") and "base64," in figure
    assert pareto_figure(points, front=points[:2], caption="mine").endswith("<figcaption>mine</figcaption></figure>")


def junit_cases(path):
    suite = ET.parse(path).getroot().find("testsuite")
    return suite, {c.get("name"): c for c in suite.findall("testcase")}


def test_compile_cli_writes_report_and_junit(cached_compile, tmp_path):
    from slmc.cli.main import cli

    result = CliRunner().invoke(cli, ["compile", "-m", "tiny-lm", "-r", str(cached_compile.recipe), "-o", str(tmp_path / "out"),
                                      "--cache-dir", str(cached_compile.cache), "--report", str(tmp_path / "rep"),
                                      "--junit", str(tmp_path / "junit.xml"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cache"]["status"] == "hit"
    assert json.loads((tmp_path / "rep" / REPORT_JSON).read_text())["cache"]["status"] == "hit"
    assert (tmp_path / "rep" / REPORT_HTML).is_file()
    suite, cases = junit_cases(tmp_path / "junit.xml")
    assert set(cases) == {"artifact_vs_eager", "decode", "min_cosine"} and suite.get("failures") == "0"
    assert all(c.find("failure") is None for c in cases.values())


def test_eval_gates_as_junit_and_exit_code(cached_compile, tmp_path):
    """A failed gate is a <failure> test case and exit 1; a passed one is a plain test case."""
    from slmc.cli.main import cli

    args = ["eval", str(cached_compile.artifact), "--reference", "tiny-lm", "--text", "stdlib-heldout", "--max-tokens", "64",
            "--window", "32", "--stride", "16", "--gate", "min_top1_agreement=0.5", "--gate", "max_abs_error=0",
            "--junit", str(tmp_path / "eval.xml"), "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    suite, cases = junit_cases(tmp_path / "eval.xml")
    assert suite.get("failures") == "1" and suite.get("tests") == "2"
    assert cases["min_top1_agreement"].find("failure") is None
    assert cases["max_abs_error"].find("failure").get("type") == "QualityGateFailed"


@pytest.mark.parametrize("gate, message", [("bogus=1", "Extra inputs"), ("min_cosine", "NAME=VALUE"),
                                           ("min_cosine=2", "less than or equal")])
def test_bad_gate_option_exits_2(cached_compile, gate, message):
    from slmc.cli.main import cli

    result = CliRunner().invoke(cli, ["eval", str(cached_compile.artifact), "--reference", "tiny-lm", "--text",
                                      "stdlib-heldout", "--max-tokens", "64", "--window", "32", "--stride", "16", "--gate", gate])
    assert result.exit_code == 2 and message in result.output


def test_compile_junit_on_a_failed_compile(tmp_path):
    """A compile that fails before verification is one <error> test case."""
    from slmc.cli.main import cli

    result = CliRunner().invoke(cli, ["compile", "-m", "no-such-model", "-o", str(tmp_path / "out"),
                                      "--junit", str(tmp_path / "junit.xml")])
    assert result.exit_code == 2
    suite, cases = junit_cases(tmp_path / "junit.xml")
    assert list(cases) == ["compile"] and cases["compile"].find("error") is not None and suite.get("errors") == "1"


INT4_GATED = """\
passes: [{quantize: {bits: 4, group_size: 32}}]
verify: {num_samples: 2, gates: {min_top1_agreement: 0.999}}
"""


def test_a_failed_gate_still_writes_the_report_and_names_the_suite(tmp_path):
    """Issue 16: the per-layer charts matter most when a gate fails; the suite is the model's and target's."""
    from slmc.cli.main import cli

    (tmp_path / "int4.yaml").write_text(INT4_GATED)
    result = CliRunner().invoke(cli, ["compile", "-r", str(tmp_path / "int4.yaml"), "-m", "tiny-lm", "-o", str(tmp_path / "out"),
                                      "--no-cache", "--report", str(tmp_path / "rep"), "--junit", str(tmp_path / "junit.xml")])
    assert result.exit_code == 1 and "min_top1_agreement not met" in result.output
    assert not (tmp_path / "out").exists()
    data = json.loads((tmp_path / "rep" / REPORT_JSON).read_text())
    jsonschema.validate(data, report_schema())
    assert data["ok"] is False and data["artifact"] is None and data["model"]["name"] == "tiny-lm"
    assert data["layers"] and data["passes"][0]["name"] == "quantize" and data["timings"]["total"] > 0
    assert not data["verification"]["passed"] and data["verification"]["executed"]
    page = (tmp_path / "rep" / REPORT_HTML).read_text()
    assert "Size by layer" in page and "data:image/png;base64," in page and "min_top1_agreement" in page
    suite, cases = junit_cases(tmp_path / "junit.xml")
    assert suite.get("name") == "slmc.compile.tiny-lm.host" and float(suite.get("time")) > 0
    assert set(cases) == {"artifact_vs_eager", "decode", "min_top1_agreement"} and suite.get("failures") == "1"
    assert cases["min_top1_agreement"].find("failure").get("type") == "QualityGateFailed"


def test_require_execution_fails_the_junit_case_of_the_artifact_run(tmp_path):
    """Gates measured on the host are real cases; the artifact's run is a failure under --require-execution."""
    from slmc.cli.main import cli

    (tmp_path / "cheap.yaml").write_text("verify:\n  num_samples: 1\n  gates: {min_cosine: 0.99}\n")
    result = CliRunner().invoke(cli, ["compile", "-r", str(tmp_path / "cheap.yaml"), "-m", "tiny-lm", "-t", "arm-cortex-a76",
                                      "-o", str(tmp_path / "out"), "--no-cache", "--require-execution", "--json",
                                      "--report", str(tmp_path / "rep"), "--junit", str(tmp_path / "junit.xml")])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["type"] == "ExecutionRequiredError"
    suite, cases = junit_cases(tmp_path / "junit.xml")
    assert suite.get("name") == "slmc.compile.tiny-lm.arm-cortex-a76" and suite.get("failures") == "2"
    assert cases["min_cosine"].find("failure") is None and "measured on the host" in cases["min_cosine"].find("system-out").text
    for name in ("artifact_vs_eager", "decode"):
        assert cases[name].find("failure").get("type") == "ExecutionRequired"
    report = json.loads((tmp_path / "rep" / REPORT_JSON).read_text())
    assert report["ok"] is False and [c["check"] for c in report["verification"]["not_executed"]] == ["artifact_vs_eager", "decode"]
    assert not (tmp_path / "out").exists()
    # without --require-execution: the same build passes, the artifact's run is a skipped case
    result = CliRunner().invoke(cli, ["compile", "-r", str(tmp_path / "cheap.yaml"), "-m", "tiny-lm", "-t", "arm-cortex-a76",
                                      "-o", str(tmp_path / "out"), "--no-cache", "--junit", str(tmp_path / "ok.xml")])
    assert result.exit_code == 0, result.output
    suite, cases = junit_cases(tmp_path / "ok.xml")
    assert suite.get("failures") == "0" and suite.get("skipped") == "2" and cases["min_cosine"].find("skipped") is None
    assert cases["decode"].find("skipped").get("message").startswith("not executed: code is for aarch64")


def test_report_files_get_the_users_umask(cached_compile, tmp_path):
    import os

    result = cached_compile.result
    previous = os.umask(0o027)
    try:
        json_path, html_path = write_report(build_report(result.manifest, result.artifact, result.cache, result.timings),
                                            tmp_path / "report")
    finally:
        os.umask(previous)
    assert [p.stat().st_mode & 0o777 for p in (json_path.parent, json_path, html_path)] == [0o750, 0o640, 0o640]


def test_gpu_kernel_checks_reach_the_report_per_kernel(cached_compile):
    """The manifest's verification.gpu_kernels (slmc.backend.opencl_kernel_run) in report.json and the HTML page."""
    from slmc.artifact.gpu_kernel_checks import GpuKernelCheck, GpuKernelChecks

    checks = GpuKernelChecks(
        device="PoCL 3.1 'cpu' via pyopencl 2024.1", reference="the same PrimFunc built for the host CPU",
        tolerance={"float32": 1e-5}, kernels=2, executed=1, compiled_only=1, passed=True,
        per_kernel=[GpuKernelCheck(kernel="matmul_kernel", primfunc="matmul", status="executed", max_abs_error=1e-7,
                                   max_rel_error=2e-7, integer_elements_differing=0, passed=True,
                                   launches=[{"global": [8, 32, 1], "local": [8, 8, 1]}]),
                    GpuKernelCheck(kernel="cast_kernel", primfunc="cast", status="compiled_only",
                                   reason="needs cl_khr_fp16, which PoCL's CPU device 'cpu' does not offer")])
    manifest = cached_compile.result.manifest
    manifest = manifest.model_copy(update={"verification": manifest.verification.model_copy(update={"gpu_kernels": checks})})
    report = build_report(manifest, None, None)
    data = report.to_json()
    jsonschema.validate(data, report_schema())
    assert [k["status"] for k in data["verification"]["gpu_kernels"]["per_kernel"]] == ["executed", "compiled_only"]
    page = render_html(report)
    assert 'id="gpu-kernels"' in page and "matmul_kernel" in page and "needs cl_khr_fp16" in page


@pytest.mark.parametrize("gate", ["min_npu_mac_fraction=0.5", "npu_sram_fit=true", "max_npu_cycles=1000"])
def test_an_npu_build_gate_given_to_eval_is_refused_not_ignored(gate):
    """The NPU gates are measured by a compile (slmc.npu.gates); slmc eval names them as unmeasurable."""
    from slmc.errors import InputError
    from slmc.report.ci_outputs import eval_gates, parse_gates

    result = {"task": "causal-lm", "comparison": {"top1_agreement": 0.9, "max_logit_error": 0.1, "min_cosine": 0.99}}
    with pytest.raises(InputError, match=gate.split("=")[0] + ".*cannot be measured"):
        eval_gates(result, parse_gates((gate,)))
    assert [g.gate for g in eval_gates(result, parse_gates(("min_top1_agreement=0.5",)))] == ["min_top1_agreement"]
