from npu_helpers import random_layer

from slmc.npu.report import partition_cost


def test_fitting_partition_costs(npu_target):
    layer = random_layer(0, 4, 128, 64, bias=False)
    cost = partition_cost(layer, 16, npu_target)
    assert cost["macs"] == 16 * 128 * 64
    assert cost["weight_bytes"] == 128 * 64 + 12 * 64 and cost["activation_bytes"] == 16 * (128 + 64)
    assert cost["fits"] and cost["weight_tiles"] == 1
    assert cost["cycles"]["compute_bound"] == 16 * 128 * 64 // 256  # generic NPU: 256 MACs/cycle
    # 8 GB/s at 1 GHz: 8 bytes per cycle
    assert cost["cycles"]["memory_bound"] == -(-(cost["weight_bytes"] + cost["activation_bytes"]) // 8)
    assert cost["cycles"]["estimate"] == max(cost["cycles"]["compute_bound"], cost["cycles"]["memory_bound"])


def test_large_layers_are_tiled_and_oversized_activations_reported(npu_target):
    layer = random_layer(0, 1, 2048, 1024, bias=False)  # 2 MiB of int8 weights > 1 MiB SRAM
    cost = partition_cost(layer, 1, npu_target)
    assert not cost["fits"] and cost["weight_tiles"] == 3
    huge = partition_cost(layer, 4096, npu_target)  # 4096 * 3072 B of activations > SRAM
    assert huge["weight_tiles"] is None and "tokens must be split" in huge["note"]
