"""Storage formats and round-to-nearest (slmc.quantization.formats)."""

from __future__ import annotations

import pytest
import torch

from slmc.quantization.formats import QuantFormat, dequantize, pack, quantize_rtn, unpack

FORMATS = [QuantFormat(4, 32, True), QuantFormat(4, 16, False), QuantFormat(8, None, True), QuantFormat(8, 64, False)]


def test_int4_packs_two_codes_per_byte_low_nibble_first():
    codes = torch.tensor([[1, 2, 15, 0]], dtype=torch.uint8)
    packed = pack(codes, 4)
    assert packed.tolist() == [[1 | (2 << 4), 15]]
    assert torch.equal(unpack(packed, 4), codes)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.describe())
def test_rtn_error_is_at_most_half_a_step(fmt):
    torch.manual_seed(0)
    w = torch.randn(48, 128)
    q = quantize_rtn(w, fmt)
    g = fmt.group(128)
    step = q.scales.to(torch.float32).repeat_interleave(g, dim=1)
    # symmetric codes clip nothing (range is max|w|); float16 scale rounding adds a little
    assert ((q.dequantize() - w).abs() <= 0.5 * step * 1.01 + 1e-6).all()
    assert q.packed().shape == (48, 128 * fmt.bits // 8)
    assert q.scales.dtype == torch.float16 and q.scales.shape == (48, 128 // g)
    assert (q.zeros is None) == fmt.symmetric


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.describe())
def test_dequantize_of_packed_matches_codes(fmt):
    w = torch.randn(8, 64)
    q = quantize_rtn(w, fmt)
    direct = dequantize(q.packed(), q.scales, q.zeros, fmt.bits, fmt.group(64))
    assert torch.equal(direct, q.dequantize())


def test_int4_g32_symmetric_costs_4_5_bits_per_weight():
    q = quantize_rtn(torch.randn(64, 256), QuantFormat(4, 32, True))
    assert q.stored_bytes() * 8 / (64 * 256) == 4.5


def test_shape_problems_are_named():
    assert "not a multiple of group_size 32" in QuantFormat(4, 32, True).check_shape(8, 48)
    assert QuantFormat(4, 32, True).check_shape(8, 64) is None
    with pytest.raises(ValueError, match="bits must be one of"):
        QuantFormat(3, None, True)


def test_all_zero_rows_do_not_divide_by_zero():
    q = quantize_rtn(torch.zeros(4, 32), QuantFormat(4, 32, False))
    assert torch.equal(q.dequantize(), torch.zeros(4, 32))
