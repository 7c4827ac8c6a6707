"""Helpers for the NPU tests: a random int8 layer."""

import numpy as np

from slmc.npu.layers import NpuLayer


def random_layer(seed: int, rows: int, k: int, n: int, bias: bool) -> NpuLayer:
    rng = np.random.default_rng(seed)
    return NpuLayer(node=f"linear_{seed}", weight=f"l{seed}.qweight",
                    qweight=rng.integers(-127, 128, (n, k), dtype=np.int8),
                    weight_scales=rng.uniform(1e-3, 1e-2, n).astype(np.float32),
                    bias=rng.normal(0, 0.5, n).astype(np.float32) if bias else None,
                    activation_scale=0.02, output_scale=0.5 + seed * 0.1,
                    codes=rng.integers(-127, 128, (rows, k), dtype=np.int8))
