"""End to end: the fixture LM with the int8 NPU recipe through the CLI for the generic NPU and the Ethos-U targets."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from slmc.npu.fixed_point import integer_linear, quantize_multiplier
from slmc.npu.qdq_onnx import run_onnxruntime

RECIPE = Path(__file__).parents[3] / "examples" / "recipes" / "npu-int8.yaml"


@pytest.mark.slow
def test_fixture_lm_int8_on_the_generic_npu(tmp_path):
    out = tmp_path / "artifact"
    done = subprocess.run([sys.executable, "-m", "slmc", "compile", "-m", "fixture-lm", "-r", str(RECIPE),
                           "-t", "generic-int8-npu", "-o", str(out), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    report, check = manifest["npu"], manifest["verification"]["npu"]
    assert report["executed_on_npu"] is False and report["totals"]["partitions"] >= 1
    assert report == json.loads((out / "npu_partitions.json").read_text())
    assert all(p["composites"] == ["npu.w8a8_linear"] and p["at_tokens"]["macs"] > 0 for p in report["partitions"])
    assert report["totals"]["partitions"] == 29 and report["totals"]["tokens"] == 128  # 4 blocks x 7 linears + lm_head
    reasons = {f["op"]: f["reason"] for f in report["fallbacks"]}
    assert "not in the NPU's ops.supported" in reasons["rsqrt"] and "quantizes linears only" in reasons["softmax"]
    assert "quantized_embedding" in reasons  # the int8 embedding table is a lookup, not an NPU op
    assert check["passed"] and check["tvm_vs_numpy"]["max_abs_lsb"] == 0 and check["tvm_vs_onnxruntime"]["max_abs_lsb"] <= 1
    assert check["tosa_reference"]["elements_differing"] == 0 and check["tosa_reference"]["elements"] > 0
    assert manifest["npu_toolchain"]["vela"] is None  # a generic NPU: TOSA and its reference model, no Vela
    assert manifest["verification"]["passed"]

    # the shipped QDQ model, run by ONNX Runtime on fresh codes, against the fixed-point reference built
    # from the model's own initializers (region 0)
    model = onnx.load(str(out / "npu_regions.onnx"))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weights = init["r0_w_q"].T
    codes = np.random.default_rng(0).integers(-127, 128, (8, weights.shape[1]), dtype=np.int8)
    real = init["r0_x_scale"].astype(np.float64) * init["r0_w_scale"].astype(np.float64) / init["r0_y_scale"]
    multiplier, shift = quantize_multiplier(real)
    inputs = [codes] + [np.zeros((8, int(i.type.tensor_type.shape.dim[1].dim_value)), np.int8) for i in model.graph.input[1:]]
    ort = run_onnxruntime(model, inputs)[0]
    bias = init.get("r0_b_q", np.zeros(weights.shape[0], np.int32))
    expected = integer_linear(codes, weights, bias, multiplier, shift, "half_up")
    assert np.abs(ort.astype(np.int32) - expected).max() <= 1


@pytest.mark.slow
@pytest.mark.parametrize("target", ["ethos-u65", "ethos-u55", "ethos-u85"])
def test_fixture_lm_int8_through_tosa_and_vela(tmp_path, target):
    out = tmp_path / "artifact"
    done = subprocess.run([sys.executable, "-m", "slmc", "compile", "-m", "fixture-lm", "-r", str(RECIPE),
                           "-t", target, "-o", str(out), "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    tools, tosa = manifest["npu_toolchain"], manifest["verification"]["npu"]["tosa_reference"]
    assert tosa["elements_differing"] == 0 and tosa["elements"] > 0  # the TOSA reference model agrees bit for bit
    assert len(tools["partitions"]) == manifest["npu"]["totals"]["partitions"] == 29 and not tools["refusals"]
    for partition in tools["partitions"]:  # Vela compiled every partition; its summary beside slmc's estimate
        assert partition["vela"]["npu_operators"] >= 1 and partition["vela"]["cpu_operators"] == 0
        assert partition["vela_to_slmc_cycles"] == partition["vela"]["cycles_total"] / partition["slmc_estimated_cycles"]
        assert (out / partition["tosa_file"]).is_file() and (out / partition["vela_file"]).is_file()
    totals = tools["totals"]
    # every linear is on the NPU; Q K^T and P V (2 per block x 4 blocks, 8 heads of 32, 128 keys) stay on the CPU
    assert totals["attention_context_tokens"] == 128 and totals["attention_macs"] == 8 * 8 * 32 * 128
    assert totals["npu_macs"] == totals["model_macs"] - totals["attention_macs"] == 3_801_088
    assert totals["npu_mac_fraction"] == pytest.approx(3_801_088 / 4_063_232) and totals["vela_cycles"] > 0
