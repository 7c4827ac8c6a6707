"""The recipe's NPU gates measured on the partitions (Vela's figures where the target has Vela)."""

import json
import subprocess
import sys

import pytest

from slmc.artifact.npu_toolchain import NpuToolchain
from slmc.npu.gates import npu_gate_results
from slmc.npu.macs import ModelMacs
from slmc.spec.recipe import Gates


def _report(fits: bool = True):
    cost = {"cycles": {"estimate": 1000, "seconds": 1e-6}, "fits": fits, "sram_bytes": 4096}
    return {"partitions": [{"index": 0, "layer": "q_proj", "at_tokens": cost}, {"index": 1, "layer": "k_proj", "at_tokens": cost}]}


def test_min_npu_mac_fraction_names_the_layers_left_on_the_cpu():
    macs = ModelMacs(linear={"q_proj": 100, "k_proj": 100, "lm_head": 200}, attention={}, context=8)
    [result] = npu_gate_results(Gates(min_npu_mac_fraction=0.9), _report(), None, macs)
    assert result.gate == "min_npu_mac_fraction" and not result.passed and result.measured == 0.5
    assert "lm_head" in result.detail and "slmc's estimate" in result.detail


def test_attention_matmuls_are_in_the_denominator_and_named():
    """Every linear partitioned, but Q K^T and P V stay on the CPU: the fraction is 200 / 300, not 1."""
    macs = ModelMacs(linear={"q_proj": 100, "k_proj": 100}, attention={"matmul": 50, "matmul_1": 50}, context=16)
    [result] = npu_gate_results(Gates(min_npu_mac_fraction=1.0), _report(), None, macs)
    assert not result.passed and result.measured == pytest.approx(2 / 3)
    assert "2 attention matmuls (activation x activation, on the CPU) at 16 tokens: 100 MACs per token" in result.detail


def test_vela_refused_partitions_are_off_the_npu_and_named():
    toolchain = NpuToolchain.model_validate({
        "tosa_tools": "2026.8.0", "tosa_profile": "PRO-INT", "tosa_version": "1.0.0", "vela": "5.2.0",
        "accelerator_config": "ethos-u55-256", "system_config": "s", "memory_mode": "m",
        "partitions": [{"index": 0, "layer": "q_proj", "rows": 8, "tosa_file": "npu_tosa/partition_0.tosa",
                        "tosa_operators": ["CONV2D", "RESCALE"], "slmc_estimated_cycles": 1000,
                        "vela": {"cycles_total": 5000, "cycles_npu": 900, "inference_time_s": 1e-5, "nn_macs": 1,
                                 "sram_used_bytes": 8192, "dram_used_bytes": 0, "flash_used_bytes": 0, "npu_operators": 1,
                                 "cpu_operators": 0, "weights_storage_area": "", "operators": []}},
                       {"index": 1, "layer": "k_proj", "rows": 8, "tosa_file": "npu_tosa/partition_1.tosa",
                        "tosa_operators": ["CONV2D", "RESCALE"], "slmc_estimated_cycles": 1000}]})
    gates = Gates(min_npu_mac_fraction=0.75, max_npu_cycles=4000, npu_sram_fit=True)
    fraction, cycles, sram = npu_gate_results(gates, _report(), toolchain,
                                             ModelMacs(linear={"q_proj": 100, "k_proj": 100}, attention={}, context=8))
    assert not fraction.passed and fraction.measured == 0.5 and "1 (k_proj)" in fraction.detail
    assert not cycles.passed and cycles.measured == 5000 and "Vela 5.2.0" in cycles.detail
    assert not sram.passed and "0 (q_proj)" in sram.detail  # Vela used 8 KiB of SRAM, the descriptor has 4 KiB


@pytest.mark.slow
def test_a_build_missing_min_npu_mac_fraction_exits_1_naming_it(tmp_path):
    recipe = tmp_path / "npu-gated.yaml"
    recipe.write_text(json.dumps({
        "passes": [{"quantize": {"scheme": "w8a8", "exclude": ["*lm_head"]}}],
        "calibration": {"text": "stdlib-train", "num_samples": 2, "sequence_length": 16},
        "verify": {"num_samples": 1, "gates": {"min_npu_mac_fraction": 0.99}}}))
    done = subprocess.run([sys.executable, "-m", "slmc", "compile", "-m", "tiny-lm", "-r", str(recipe), "-t", "ethos-u65",
                           "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "quality gate min_npu_mac_fraction not met" in done.stderr
    assert "linear layers not partitioned (CPU): linear_12" in done.stderr  # the float lm_head
