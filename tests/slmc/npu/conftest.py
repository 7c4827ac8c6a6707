"""tiny-lm quantized to w8a8 for the generic NPU target, and its Relax module (built once per session)."""

from __future__ import annotations

import pytest
import torch


def _samples(count: int, tokens: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    cache = (2, 1, 4, 3, 32)
    return [(torch.randint(0, 256, (1, tokens), generator=gen), torch.randn(cache, generator=gen),
             torch.randn(cache, generator=gen)) for _ in range(count)]


@pytest.fixture(scope="session")
def npu_target():
    from slmc.spec.target import load_target

    return load_target("generic-int8-npu")


@pytest.fixture(scope="session")
def w8a8_lm(npu_target):
    """``(graph, relax_module, samples)``: tiny-lm through ``quantize: {scheme: w8a8}`` with lm_head left in float."""
    from slmc.graph.ir import trace
    from slmc.backend.lowering import to_relax
    from slmc.models import tiny_lm
    from slmc.spec.pass_registry import PassContext, get_pass

    samples = _samples(2, 16)
    quantize = get_pass("quantize")
    outcome = quantize.run(trace(tiny_lm.build()), quantize.config(scheme="w8a8", exclude=["*lm_head"]),
                           PassContext(npu_target, samples))
    return outcome.graph, to_relax(outcome.graph).module, samples
