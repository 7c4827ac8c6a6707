"""The NPU partitions through the TOSA tools and Vela on the Ethos-U descriptors (tiny-lm, w8a8)."""

import numpy as np
import pytest
from slmc.npu.fixed_point import integer_linear
from slmc.npu.layers import NpuLayer, offloadable_layers
from slmc.npu.macs import model_macs_per_token
from slmc.npu.report import partition_cost
from slmc.npu.toolchain import run_toolchain
from slmc.spec.target import load_target


@pytest.mark.parametrize("name", ["ethos-u65", "ethos-u55", "ethos-u85"])
def test_every_partition_compiles_with_vela_and_matches_the_reference_model(w8a8_lm, name):
    graph, _, samples = w8a8_lm
    target = load_target(name)
    layers = offloadable_layers(graph, samples)
    rows = layers[0].codes.shape[0] // len(samples)
    run = run_toolchain(model_macs_per_token(graph, rows), layers, [partition_cost(layer, rows, target) for layer in layers], rows, target)
    record = run.record
    assert record.vela == "5.2.0" and record.accelerator_config == target.npu.vela.accelerator_config
    assert not record.refusals and all(p.vela is not None and p.vela.npu_operators >= 1 and p.vela.cpu_operators == 0
                                       for p in record.partitions)
    assert all(p.vela.cycles_total > 0 and p.vela_to_slmc_cycles > 0 for p in record.partitions)
    assert all(f"npu_tosa/partition_{p.index}.tosa" in run.files and p.vela_file in run.files for p in record.partitions)
    assert record.totals.npu_mac_fraction < 1.0  # lm_head stays float (conftest's recipe excludes it)
    assert record.totals.attention_macs == 4 * 4 * 32 * rows and record.totals.attention_context_tokens == rows
    differing = sum(int((ref != integer_linear(layer.codes, layer.qweight, layer.bias_codes, layer.multiplier,
                                                layer.shift, target.npu.rounding)).sum())
                    for ref, layer in zip(run.reference_outputs, layers))
    assert differing == 0


def test_a_partition_vela_refuses_is_reported_per_operator_not_raised(w8a8_lm):
    """An int8 linear with 70,000 inputs: beyond what an Ethos-U55 convolution takes, so Vela refuses its CONV2D."""
    graph, _, _ = w8a8_lm
    target = load_target("ethos-u55")
    rng = np.random.default_rng(0)
    wide = NpuLayer(node="wide_linear", weight="wide.qweight", qweight=rng.integers(-127, 128, (4, 70_000)).astype(np.int8),
                    weight_scales=np.full(4, 0.01, np.float32), bias=None, activation_scale=0.02, output_scale=0.5,
                    codes=rng.integers(-128, 128, (2, 70_000)).astype(np.int8))
    run = run_toolchain(model_macs_per_token(graph, 1), [wide], [partition_cost(wide, 1, target)], 1, target)
    [refusal] = run.record.refusals
    assert refusal.layer == "wide_linear" and refusal.operator == "Conv2D" and refusal.tosa_operator == "CONV2D"
    assert refusal.vela_message == "Non-passthrough operation (Conv2D) could not run on NPU" and refusal.supported_by_vela
    # Vela's constraint this layer breaks (70,000 input channels), in Vela's words, in the recorded reason
    assert "Tensor axis: NHW any, C in range 1..65536" in refusal.vela_constraints
    assert "C in range 1..65536" in refusal.reason
    assert run.record.partitions[0].vela is None and run.record.totals.npu_macs == 0
    expected = integer_linear(wide.codes, wide.qweight, wide.bias_codes, wide.multiplier, wide.shift, "half_up")
    assert (run.reference_outputs[0] == expected).all()  # still executed by the TOSA reference model
