import json

import onnx

from slmc.artifact.manifest import NpuCheck, Verification
from slmc.npu.offload import QDQ_FILE, REPORT_FILE, npu_offload


def test_offload_reports_partitions_and_cross_checks_against_onnxruntime(w8a8_lm, npu_target, tmp_path):
    graph, module, samples = w8a8_lm
    npu = npu_offload(graph, module, npu_target, samples)
    report, check = npu.report, npu.check
    assert report["executed_on_npu"] is False and report["totals"]["partitions"] == 12
    assert report["totals"]["tokens"] == 16 and all(p["at_tokens"]["fits"] for p in report["partitions"])
    assert {f["op"] for f in report["fallbacks"]} >= {"linear", "softmax", "rsqrt"}
    assert check.passed and check.tvm_vs_numpy.max_abs_lsb == 0
    assert check.tvm_vs_onnxruntime.max_abs_lsb <= 1 and check.tvm_vs_onnxruntime.fraction_equal > 0.999
    assert "not on an NPU" in check.how
    npu.write(tmp_path)
    assert json.loads((tmp_path / REPORT_FILE).read_text())["totals"]["partitions"] == 12
    assert len(onnx.load(str(tmp_path / QDQ_FILE)).graph.input) == 12
    recorded = npu.record(Verification.skipped("not executed here"))
    assert recorded.passed and recorded.npu is check


def test_a_failed_cross_check_fails_verification_and_no_layers_means_no_check(w8a8_lm, npu_target):
    from slmc.npu.offload import NpuOffload

    failed = NpuOffload({}, None, NpuCheck(executed=True, passed=False))
    assert failed.record(Verification(executed=True, passed=True)).passed is False
    graph, module, samples = w8a8_lm
    no_linear = npu_target.model_copy(update={"ops": npu_target.ops.model_copy(update={"supported": ["add"]})})
    npu = npu_offload(graph, module, no_linear, samples)
    assert npu.qdq is None and npu.report["totals"]["partitions"] == 0 and not npu.check.executed
    assert any(f["op"] == "w8a8_linear" for f in npu.report["fallbacks"])
