"""A token's MACs per op (the NPU MAC fraction's denominator): linear-like ops and attention matmuls."""

import pytest
import torch

from slmc.graph.ir import trace
from slmc.models import tiny_lm
from slmc.npu.macs import ModelMacs, linear_macs_per_token, model_macs_per_token
from slmc.spec.pass_registry import PassContext, get_pass
from slmc.spec.target import load_target


@pytest.mark.parametrize("settings", [{"bits": 4, "group_size": 32, "method": "rtn"},
                                      {"scheme": "w4a8", "group_size": 32, "method": "rtn"},
                                      {"scheme": "w8a8", "exclude": ["*lm_head"]}])
def test_every_linear_like_op_counts_its_macs_per_token_as_the_float_linear_did(settings):
    """An int4 or w4a8 layer left on the CPU still counts its K * N."""
    graph = trace(tiny_lm.build())
    before = linear_macs_per_token(graph)
    quantize = get_pass("quantize")
    samples = [(torch.randint(0, 256, (1, 16)), torch.randn(2, 1, 4, 3, 32), torch.randn(2, 1, 4, 3, 32))]
    after = linear_macs_per_token(quantize.run(graph.clone(), quantize.config(**settings),
                                               PassContext(load_target("host"), samples)).graph)
    assert len(before) >= 10 and sorted(after.values()) == sorted(before.values())


def test_attention_matmuls_count_heads_times_head_dim_times_the_context():
    """tiny-lm: 2 layers, each Q K^T and P V over 4 heads of 32: 4 * 32 * context MACs per token each."""
    graph = trace(tiny_lm.build())
    for context in (16, 128):
        macs = model_macs_per_token(graph, context)
        assert macs.context == context and len(macs.attention) == 4
        assert set(macs.attention.values()) == {4 * 32 * context}
        assert macs.total == sum(macs.linear.values()) + 4 * 4 * 32 * context


def test_every_linear_on_the_npu_is_not_every_mac_on_the_npu(w8a8_lm):
    """The attention matmuls stay on the CPU: with all linears offloaded the fraction is below 1."""
    graph, _, _ = w8a8_lm
    macs = model_macs_per_token(graph, 16)
    linear = sum(macs.linear.values())
    assert macs.fraction(macs.linear) == linear / (linear + 4 * 4 * 32 * 16) < 1.0


def test_a_layer_counts_once():
    macs = ModelMacs(linear={"a": 100, "b": 300}, attention={"matmul": 100}, context=8)
    assert macs.on(["a", "a"]) == 100 and macs.fraction(["a", "b", "unknown"]) == 0.8
