"""The TOSA reference model refusing a graph is a typed error carrying its own diagnostics."""

import dataclasses

import numpy as np
import pytest

from slmc.npu.layers import NpuLayer
from slmc.npu.tosa_lowering import lower_partition
from slmc.npu.tosa_reference import TosaReferenceError, run_partition


def test_a_corrupt_graph_is_a_tosa_reference_error():
    layer = NpuLayer(node="linear_0", weight="w.qweight", qweight=np.ones((2, 4), np.int8),
                     weight_scales=np.full(2, 0.01, np.float32), bias=None, activation_scale=0.1, output_scale=0.1,
                     codes=np.ones((1, 4), np.int8))
    partition = lower_partition(3, layer, rows=1, rounding="half_up", profile="PRO-INT")
    corrupt = dataclasses.replace(partition, flatbuffer=partition.flatbuffer[:64])
    with pytest.raises(TosaReferenceError, match="NPU partition 3 \\('linear_0'\\)"):
        run_partition(corrupt, layer.codes)
