"""Shared fixtures: small models built in code, the host target, a scratch working directory."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning)


@pytest.fixture(scope="session")
def host_target():
    from slmc.spec.target import load_target

    return load_target("host")


@pytest.fixture()
def tiny_lm_graph():
    from slmc.graph.ir import trace
    from slmc.models import tiny_lm

    return trace(tiny_lm.build())


class ConstantsModel(torch.nn.Module):
    """y = x @ (2 * W).T + (b + 1): two constant subgraphs a folder must precompute."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(32, 16))
        self.bias = torch.nn.Parameter(torch.randn(32))

    def forward(self, x):
        return torch.nn.functional.linear(x, self.weight * 2.0, self.bias + 1.0)


@pytest.fixture()
def constants_graph():
    from slmc.graph.ir import ModelSpec, trace

    return trace(ModelSpec(ConstantsModel(), (torch.randn(4, 16),), name="constants"))


def _lm_inputs(tokens: int, past: int = 1, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    cache = (2, 1, 4, past, 32)
    return (torch.randint(0, 256, (1, tokens), generator=gen), torch.randn(cache, generator=gen), torch.randn(cache, generator=gen))


@pytest.fixture()
def lm_inputs():
    """``lm_inputs(tokens, past=1, seed=0)``: tiny-lm inputs, ids [1, tokens] and caches [2, 1, 4, past, 32]."""
    return _lm_inputs
