"""Prepacking: weights main only transposes are stored transposed at compile time (slmc.schedules.prepack)."""

from __future__ import annotations

import numpy as np
import torch
import tvm
from tvm import relax

from slmc.ir import ModelSpec, trace
from slmc.lowering import build, to_relax


class TiedLM(torch.nn.Module):
    """An embedding table reused as the output projection (tied), and an untied linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(50, 32)
        self.proj = torch.nn.Linear(32, 32, bias=False)

    def forward(self, ids):
        h = self.proj(self.embed(ids))
        return h @ self.embed.weight.T


def test_only_transposed_weights_are_stored_transposed_and_outputs_match(host_target):
    module = TiedLM().eval()
    spec = ModelSpec(module, (torch.randint(0, 50, (1, 4)),), ({1: torch.export.Dim("t", min=1, max=16)},))
    program = to_relax(trace(spec))
    by_name = dict(zip(program.weight_names, program.weights))
    proj = next(v for k, v in by_name.items() if "proj" in k)
    embed = next(v for k, v in by_name.items() if "embed" in k)
    np.testing.assert_array_equal(proj, module.proj.weight.detach().numpy().T)  # [K, N]: prepacked
    np.testing.assert_array_equal(embed, module.embed.weight.detach().numpy())  # also gathered: left as it is
    assert any("prepacked 1 weights" in note for note in program.notes)
    main = program.module["main"]
    assert [list(p.ty.shape.values) for p in main.params[program.num_inputs:]] == [list(w.shape) for w in program.weights]
    vm = relax.VirtualMachine(build(program, host_target), tvm.cpu())
    ids = torch.randint(0, 50, (1, 7))
    out = vm["main"](tvm.runtime.tensor(ids.numpy()), *[tvm.runtime.tensor(w) for w in program.weights])
    with torch.no_grad():
        np.testing.assert_allclose(out[0].numpy(), module(ids).numpy(), atol=1e-4)
