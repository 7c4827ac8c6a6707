"""The NPU regions' integer arithmetic as TVM kernels, built for and run on the host CPU.

Each region ``i`` is one TE kernel ``npu_region_i``: int8 ``x [M, K]`` times int8 ``w [N, K]`` summed
in int32, plus the int32 bias, requantized with the per-channel fixed-point multiplier and shift and
the descriptor's rounding, saturated to int8 (``slmc.npu.fixed_point`` is the numpy statement of the
same arithmetic). All regions go into one Relax ``main`` (inputs: each region's int8 codes; output: a
tuple of each region's int8 result) compiled once with ``tvm.compile`` for the host. This is the
*integer reference of the NPU*: it runs on the CPU, not on an NPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tvm
from tvm import relax, te, tirx

from slmc.npu.layers import NpuLayer


def integer_linear_te(x: te.Tensor, w: te.Tensor, bias: te.Tensor, multiplier: te.Tensor, shift: te.Tensor,
                      rounding: str) -> te.Tensor:
    """int8 ``[M, N]`` = saturate(round((sum_k int32(x[m,k]) * int32(w[n,k]) + bias[n]) * multiplier[n] >> shift[n]))."""
    rows, depth = x.shape
    width = w.shape[0]
    k = te.reduce_axis((0, depth), name="k")
    acc = te.compute((rows, width), lambda m, n: te.sum(x[m, k].astype("int32") * w[n, k].astype("int32"), axis=k),
                     name="npu_accumulate")

    def requantize(m: Any, n: Any) -> Any:
        product = (acc[m, n].astype("int64") + bias[n].astype("int64")) * multiplier[n].astype("int64")
        amount = shift[n].astype("int64")
        half = tirx.shift_left(tirx.const(1, "int64"), amount - tirx.const(1, "int64"))
        if rounding == "half_up":
            rounded = tirx.shift_right(product + half, amount)
        else:  # half_away_from_zero
            magnitude = tirx.shift_right(tirx.abs(product) + half, amount)
            rounded = tirx.Select(product < tirx.const(0, "int64"), -magnitude, magnitude)
        low, high = tirx.const(-128, "int64"), tirx.const(127, "int64")
        return tirx.max(tirx.min(rounded, high), low).astype("int8")

    return te.compute((rows, width), requantize, name="npu_requantize")


def build_reference(layers: Sequence[NpuLayer], rounding: str) -> tuple[tvm.IRModule, Any]:
    """The Relax module of every region's integer kernel (weights as constants) and its host executable."""
    bb = relax.BlockBuilder()
    inputs = [relax.Var(f"x{i}", relax.TensorType([int(layer.codes.shape[0]), layer.in_features], "int8")) for i, layer in enumerate(layers)]
    with bb.function("main", inputs):
        with bb.dataflow():
            outputs = []
            for i, (x, layer) in enumerate(zip(inputs, layers)):
                consts = [relax.const(a) for a in (layer.qweight, layer.bias_codes, layer.multiplier, layer.shift)]
                outputs.append(bb.emit_te(integer_linear_te, x, *consts, rounding, primfunc_name_hint=f"npu_region_{i}"))
            result = bb.emit_output(relax.Tuple(outputs))
        bb.emit_func_output(result)
    module = bb.get()
    executable = tvm.compile(module, target=tvm.target.Target({"kind": "llvm"}))
    return module, executable


def run_reference(executable: Any, codes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run the built reference on each region's int8 codes; returns each region's int8 output."""
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(c)) for c in codes])
    return [out[i].numpy() for i in range(len(codes))]
