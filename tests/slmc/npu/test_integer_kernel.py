import numpy as np
import pytest

from slmc.npu.fixed_point import integer_linear
from slmc.npu.integer_kernel import build_reference, run_reference
from npu_helpers import random_layer


@pytest.mark.parametrize("rounding", ["half_up", "half_away_from_zero"])
def test_tvm_integer_kernels_equal_the_numpy_reference_bit_for_bit(rounding):
    layers = [random_layer(0, 8, 64, 48, bias=True), random_layer(1, 5, 96, 16, bias=False)]
    module, executable = build_reference(layers, rounding)
    assert {gv.name_hint for gv in module.functions} >= {"npu_region_0", "npu_region_1"}
    outputs = run_reference(executable, [layer.codes for layer in layers])
    for layer, out in zip(layers, outputs):
        expected = integer_linear(layer.codes, layer.qweight, layer.bias_codes, layer.multiplier, layer.shift, rounding)
        assert out.dtype == np.int8 and out.shape == expected.shape
        np.testing.assert_array_equal(out, expected)
