"""w4a8's nibble-paired int4 layout (slmc.quantization.w4a8_layout): byte 4b + j of a row holds inputs 8b + j (low
nibble) and 8b + 4 + j (high nibble)."""

from __future__ import annotations

import torch

from slmc.quantization.formats import QuantFormat, quantize_rtn
from slmc.quantization.w4a8_layout import dequantize_paired, layout_problem, pack_paired, unpack_paired


def test_pairs_input_j_with_input_j_plus_4_in_blocks_of_8():
    codes = torch.arange(16, dtype=torch.uint8).reshape(1, 16)
    packed = pack_paired(codes)
    assert packed.shape == (1, 8)
    assert packed[0].tolist() == [0 | 4 << 4, 1 | 5 << 4, 2 | 6 << 4, 3 | 7 << 4, 8 | 12 << 4, 9 | 13 << 4, 10 | 14 << 4, 11 | 15 << 4]


def test_round_trips_and_dequantizes_like_the_plain_layout():
    q = quantize_rtn(torch.randn(24, 64, generator=torch.Generator().manual_seed(3)), QuantFormat(4, 32, True))
    packed = pack_paired(q.codes)
    assert torch.equal(unpack_paired(packed), q.codes)
    assert torch.equal(dequantize_paired(packed, q.scales, 32), q.dequantize())
    # packing is per row, so two layers' packed rows stack into the packing of their stacked codes (sibling merge)
    other = quantize_rtn(torch.randn(8, 64, generator=torch.Generator().manual_seed(4)), QuantFormat(4, 32, True))
    assert torch.equal(torch.cat([packed, pack_paired(other.codes)]), pack_paired(torch.cat([q.codes, other.codes])))


def test_needs_in_features_a_multiple_of_8():
    assert layout_problem(64) is None
    assert "in_features 36 is not a multiple of 8" in layout_problem(36)
