"""The NPU partitions through the TOSA tools and Vela on the Ethos-U descriptors (tiny-lm, w8a8)."""

import numpy as np
import pytest

from slmc.npu.fixed_point import integer_linear
from slmc.npu.layers import offloadable_layers
from slmc.npu.report import partition_cost
from slmc.npu.toolchain import run_toolchain
from slmc.spec.target import load_target


@pytest.mark.parametrize("name", ["ethos-u65", "ethos-u55", "ethos-u85"])
def test_every_partition_compiles_with_vela_and_matches_the_reference_model(w8a8_lm, name):
    graph, _, samples = w8a8_lm
    target = load_target(name)
    layers = offloadable_layers(graph, samples)
    rows = layers[0].codes.shape[0] // len(samples)
    run = run_toolchain(graph, layers, [partition_cost(layer, rows, target) for layer in layers], rows, target)
    record = run.record
    assert record.vela == "5.2.0" and record.accelerator_config == target.npu.vela.accelerator_config
    assert not record.refusals and all(p.vela is not None and p.vela.npu_operators >= 1 and p.vela.cpu_operators == 0
                                       for p in record.partitions)
    assert all(p.vela.cycles_total > 0 and p.vela_to_slmc_cycles > 0 for p in record.partitions)
    assert all(f"npu_tosa/partition_{p.index}.tosa" in run.files and p.vela_file in run.files for p in record.partitions)
    assert record.totals.npu_mac_fraction < 1.0  # lm_head stays float (conftest's recipe excludes it)
    differing = sum(int((ref != integer_linear(layer.codes, layer.qweight, layer.bias_codes, layer.multiplier,
                                                layer.shift, target.npu.rounding)).sum())
                    for ref, layer in zip(run.reference_outputs, layers))
    assert differing == 0
