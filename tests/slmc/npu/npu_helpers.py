"""Helpers for the NPU tests: a random int8 layer; a TOSA graph Vela refuses (integer division)."""

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


def integer_division_graph() -> bytes:
    """A TOSA 1.0 graph of one INTDIV (int32): an operator no Ethos-U55/U65 runs."""
    import tosa_serializer as ts

    graph = ts.TosaSerializer("", targetMajor=1, targetMinor=0, targetPatch=0, targetDraft=False)
    x = graph.addPlaceholder([1, 1, 8, 16], ts.DType.INT32)
    y = graph.addConst([1, 1, 8, 16], ts.DType.INT32, np.full((1, 1, 8, 16), 3, np.int32), name="divisor")
    out = graph.addOutput([1, 1, 8, 16], ts.DType.INT32)
    attribute = ts.TosaSerializerAttribute()
    attribute.IntDivAttribute()
    graph.addOperator(ts.Op.INTDIV, [x.name, y.name], [out.name], attribute)
    return bytes(graph.serialize())
