"""w8a8 linears through slmc's lowering: the converter tiles the weight (prepacked at compile time)
when 16 divides N and 4 divides K, Int8Matmul schedules the kernel, and the sums stay bit-exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

import slmc.quantization.ops  # noqa: F401  (registers torch.ops.slmc)
from slmc.graph.ir import ModelSpec, trace
from slmc.backend.lowering import build, to_relax


class IntegerW8A8(torch.nn.Module):
    """A w8a8 linear with activation and weight scales 1: the output is the integer sum, + relu + 1 (fused epilogues)."""

    def __init__(self, out_features: int, in_features: int):
        super().__init__()
        codes = torch.randint(-127, 128, (out_features, in_features), generator=torch.Generator().manual_seed(4))
        self.qweight = torch.nn.Parameter(codes.to(torch.int8), requires_grad=False)
        self.weight_scales = torch.nn.Parameter(torch.ones(out_features), requires_grad=False)

    def forward(self, x):
        return torch.relu(torch.ops.slmc.w8a8_linear(x, self.qweight, self.weight_scales, None, None, 1.0)) + 1.0


def _lowered(module: IntegerW8A8, host_target):
    in_features = module.qweight.shape[1]
    spec = ModelSpec(module, (torch.zeros(1, 4, in_features),), ({1: torch.export.Dim("n", min=1, max=256)},))
    program = to_relax(trace(spec))
    executable = build(program, host_target)
    return program, relax.VirtualMachine(executable, tvm.cpu())


@pytest.mark.parametrize("shape,tiled", [((48, 64), True), ((48, 66), False)],
                         ids=["tiled", "k-not-multiple-of-4"])  # N = 40: tests/slmc/quantization/test_tvm_kernels.py
def test_w8a8_linear_is_tiled_when_it_can_be_and_bit_exact(shape, tiled, host_target):
    module = IntegerW8A8(*shape)
    program, vm = _lowered(module, host_target)
    n, k = shape
    assert program.weights[0].shape == ((n // 16, k // 4, 16, 4) if tiled else (n, k))
    assert any("Int8Matmul 1" in note for note in program.notes) == tiled  # plain int32 vectors without int8_dot
    for rows in (1, 3, 128):
        x = torch.randint(-127, 128, (1, rows, k), generator=torch.Generator().manual_seed(rows)).float()
        out = vm["main"](tvm.runtime.tensor(x.numpy()), *[tvm.runtime.tensor(w) for w in program.weights])
        out = out[0] if not hasattr(out, "numpy") else out
        sums = x.numpy().astype(np.int64) @ module.qweight.numpy().astype(np.int64).T
        np.testing.assert_array_equal(out.numpy(), np.maximum(sums, 0).astype(np.float32) + 1.0)
        np.testing.assert_array_equal(out.numpy(), module(x).numpy())  # eager: float64 sums, exact too
