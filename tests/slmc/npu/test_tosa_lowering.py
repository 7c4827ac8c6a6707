"""A partition's TOSA graph (CONV2D + RESCALE) executed by the TOSA reference model equals slmc's fixed-point linear."""

import dataclasses

import numpy as np
import pytest

from slmc.npu.fixed_point import integer_linear
from slmc.npu.layers import NpuLayer
from slmc.npu.tosa_lowering import TosaLoweringError, lower_partition
from slmc.npu.tosa_reference import run_partition


def _layer(scales: np.ndarray, bias: bool = True) -> NpuLayer:
    rng = np.random.default_rng(1)
    n = scales.size
    return NpuLayer(node="linear_0", weight="w.qweight", qweight=rng.integers(-127, 128, (n, 24)).astype(np.int8),
                    weight_scales=scales.astype(np.float32), bias=rng.normal(size=n).astype(np.float32) if bias else None,
                    activation_scale=0.05, output_scale=0.1, codes=rng.integers(-128, 128, (5, 24)).astype(np.int8))


def test_reference_model_equals_the_fixed_point_linear_in_padded_blocks():
    layer = _layer(np.array([0.01, 0.02, 1e-30, 0.005]), bias=False)  # channel 2 rescales to nothing: multiplier 0, shift 1 in slmc
    assert layer.multiplier[2] == 0 and layer.shift[2] == 1
    partition = lower_partition(0, layer, rows=2, rounding="half_up", profile="PRO-INT")  # 5 rows: blocks of 2, 2, 1+pad
    assert partition.operators == ["CONV2D", "RESCALE"] and partition.flatbuffer[4:8] == b"TOSA"
    expected = integer_linear(layer.codes, layer.qweight, layer.bias_codes, layer.multiplier, layer.shift, "half_up")
    assert np.array_equal(run_partition(partition, layer.codes), expected)


def test_rounding_without_a_tosa_mode_is_refused():
    with pytest.raises(TosaLoweringError, match="half_away_from_zero"):
        lower_partition(0, _layer(np.array([0.01])), rows=1, rounding="half_away_from_zero", profile="PRO-INT")


def test_a_rescale_beyond_tosa_shift_range_is_refused():
    layer = dataclasses.replace(_layer(np.array([0.01])), output_scale=1e-13)  # rescale 5e9: shift below 2
    with pytest.raises(TosaLoweringError, match="outside TOSA RESCALE"):
        lower_partition(0, layer, rows=1, rounding="half_up", profile="PRO-INT")
