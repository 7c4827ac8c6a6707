"""The eager reference of ``w4a8_linear`` (slmc.quantization.ops) against an independent float64 computation,
per token and per block of activations (``activation_group_size``).

Tolerance: the reference sums exact integer group products and rescales in float32; the float64 check
dequantizes activations and weights first. Relative 1e-5 of the output's magnitude (measured: 3e-7).
"""

from __future__ import annotations

import pytest
import torch

from slmc.quantization.formats import QuantFormat, quantize_rtn
from slmc.quantization.ops import activation_group_problem, quantize_activation_groups, quantize_per_token
from slmc.quantization.w4a8_layout import pack_paired


def _w4a8(x, q, bias=None, group=32):
    return torch.ops.slmc.w4a8_linear(x, pack_paired(q.codes), q.scales, bias, group)


def _independent(x: torch.Tensor, q, bias=None) -> torch.Tensor:
    """float64: per-token int8 codes times their scale, times the dequantized int4 weight."""
    x = x.to(torch.float64)
    peak = x.abs().amax(-1, keepdim=True).clamp_min(1e-30).to(torch.float32).to(torch.float64)
    codes = torch.clamp(torch.round(x.to(torch.float32) * (127 / peak.to(torch.float32))), -127, 127).to(torch.float64)
    out = (codes * (peak / 127)) @ q.dequantize().to(torch.float64).T
    return out + bias.to(torch.float64) if bias is not None else out


def test_matches_an_independent_float64_computation():
    gen = torch.Generator().manual_seed(0)
    q = quantize_rtn(torch.randn(48, 128, generator=gen), QuantFormat(4, 32, True))
    x, bias = torch.randn(2, 7, 128, generator=gen) * 3, torch.randn(48, generator=gen)
    out, want = _w4a8(x, q, bias), _independent(x, q, bias)
    assert out.shape == (2, 7, 48) and out.dtype == torch.float32
    assert ((out.double() - want).abs().max() / want.abs().max()).item() < 1e-5  # measured ~3e-7


def test_each_token_has_its_own_scale():
    gen = torch.Generator().manual_seed(1)
    q = quantize_rtn(torch.randn(16, 64, generator=gen), QuantFormat(4, 64, True))
    x = torch.randn(3, 64, generator=gen)
    scaled = x.clone()
    scaled[1] *= 1000.0  # an outlier token changes its own codes only
    out, out_scaled = _w4a8(x, q, group=64), _w4a8(scaled, q, group=64)
    torch.testing.assert_close(out_scaled[[0, 2]], out[[0, 2]], rtol=0, atol=0)
    torch.testing.assert_close(out_scaled[1], out[1] * 1000.0, rtol=1e-5, atol=0)


def test_a_zero_token_gives_the_bias_and_codes_round_half_to_even():
    q = quantize_rtn(torch.randn(16, 32, generator=torch.Generator().manual_seed(2)), QuantFormat(4, 32, True))
    bias = torch.arange(16, dtype=torch.float32)
    assert torch.equal(_w4a8(torch.zeros(1, 32), q, bias), bias.unsqueeze(0))
    codes, scale = quantize_per_token(torch.tensor([[127.0, 0.5, 1.5, -2.5]]))
    assert codes.tolist() == [[127.0, 0.0, 2.0, -2.0]] and scale.item() == 1.0


def _independent_blocks(x: torch.Tensor, q, block: int) -> torch.Tensor:
    """float64: int8 codes per block of ``block`` inputs of each row (llama.cpp's Q8_0 with block 32) times their
    scales, times the dequantized int4 weight."""
    rows = x.to(torch.float32).reshape(*x.shape[:-1], -1, block)
    peak = rows.abs().amax(-1, keepdim=True).clamp_min(1e-30)
    codes = torch.clamp(torch.round(rows * (127 / peak)), -127, 127).to(torch.float64)
    dequantized = (codes * (peak.to(torch.float64) / 127)).reshape(x.shape)
    return dequantized @ q.dequantize().to(torch.float64).T


def test_activation_blocks_match_an_independent_float64_computation():
    gen = torch.Generator().manual_seed(3)
    q = quantize_rtn(torch.randn(48, 128, generator=gen), QuantFormat(4, 32, True))
    x = torch.randn(2, 7, 128, generator=gen) * 3
    for block in (32, 64):
        out = torch.ops.slmc.w4a8_linear(x, pack_paired(q.codes), q.scales, None, 32, block)
        want = _independent_blocks(x, q, block)
        assert ((out.double() - want).abs().max() / want.abs().max()).item() < 1e-5  # measured ~3e-7
    per_token = torch.ops.slmc.w4a8_linear(x, pack_paired(q.codes), q.scales, None, 32, 128)  # one block = the row
    assert torch.equal(per_token, _w4a8(x, q))


def test_an_outlier_block_changes_only_its_own_codes():
    codes, scales = quantize_activation_groups(torch.tensor([[1.0, -2.0, 0.5, 1000.0], [3.0, 0.0, -1.5, 0.25]]), 2)
    assert scales.shape == (2, 2) and scales[0].tolist() == pytest.approx([2.0 / 127, 1000.0 / 127], rel=1e-6)
    assert codes[0, :2].tolist() == [64.0, -127.0]  # 1 * 127 / 2 = 63.5 rounds half to even; per token it would be 0
    assert codes[0, 2:].tolist() == [0.0, 127.0] and codes[1].tolist() == [127.0, 0.0, -127.0, 21.0]


@pytest.mark.parametrize("in_features,group,block,message", [
    (128, 32, 48, "does not divide in_features 128"),
    (96, 32, 64, "does not divide in_features 96"),
    (128, 64, 32, "is not a multiple of the weight group size 64"),
])
def test_activation_groups_must_hold_whole_weight_groups_and_divide_the_row(in_features, group, block, message):
    assert message in activation_group_problem(in_features, group, block)
    q = quantize_rtn(torch.randn(16, in_features), QuantFormat(4, group, True))
    with pytest.raises(ValueError, match=message):
        torch.ops.slmc.w4a8_linear(torch.randn(1, in_features), pack_paired(q.codes), q.scales, None, group, block)
    assert activation_group_problem(in_features, group, None) is None and activation_group_problem(128, 32, 64) is None
