"""The CPU schedule passes in slmc's Relax pipeline: rule order, target parameters, notes."""

from __future__ import annotations

import torch

from slmc.graph.ir import ModelSpec, trace
from slmc.backend.lowering import build, to_relax
from slmc.schedules import DEFAULT_VECTOR_BITS, cpu_params


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.up, self.down = torch.nn.Linear(64, 128), torch.nn.Linear(128, 64)

    def forward(self, x):
        return self.down(torch.nn.functional.silu(self.up(x)))


def test_linears_get_slmc_rule_and_the_rest_the_fallback(host_target):
    spec = ModelSpec(MLP().eval(), (torch.randn(1, 4, 64),), ({1: torch.export.Dim("t", min=1, max=32)},))
    program = to_relax(trace(spec))
    build(program, host_target)
    summary = next(note for note in program.notes if note.startswith("CPU schedules:"))
    assert "DenseMatmul 2" in summary and "Fallback" in summary
    matmuls = [f for gv, f in program.scheduled.functions.items() if "matmul" in gv.name_hint]
    assert matmuls and all("T.parallel(" in f.script() and "T.vectorized(" in f.script() for f in matmuls)


def test_parameters_come_from_the_descriptor(host_target):
    params = cpu_params(host_target)
    assert params.vector_bits == host_target.compute.vector_width_bits and params.cores == host_target.tvm.num_cores
    arm = host_target.model_copy(update={"compute": host_target.compute.model_copy(update={"vector_width_bits": None})})
    assert cpu_params(arm).vector_bits == DEFAULT_VECTOR_BITS
