"""The stored layout of ``w4a8_linear``'s int4 codes: nibbles paired four inputs apart.

``qweight`` is uint8 ``[N, K/2]``, indexed by output row first (rows can be stacked or sliced, as
``passes/_sibling_merge.py`` does), like ``slmc.quantization.formats``' int4 layout, but within a
row the inputs go in blocks of ``PAIR_BLOCK`` = 8: byte ``4b + j`` (``j < 4``) holds input ``8b + j``
in its low nibble and input ``8b + 4 + j`` in its high nibble. The converter tiles it
``[N/16, K/8, 16, 4]`` (``slmc.quantization.tvm_kernels``): one 64-byte block then holds two int8
dot-product tiles of 16 channels x 4 inputs (``slmc.schedules.int8_dot_intrinsics``), the first in
the low nibbles and the next in the high nibbles, so a tile is ``(bytes >> s) & 15`` over 64
contiguous bytes (one shift and one mask on x86 and Arm) instead of a byte-by-byte interleave.
llama.cpp's Q4_0 blocks pair the same way (``x[j]`` with ``x[j + 16]`` in a block of 32).

Codes are the symmetric int4 codes ``c`` in ``[1, 15]`` standing for ``c - 8``
(``slmc.quantization.formats``, zero point ``INT4_MID``). Precondition: ``PAIR_BLOCK`` divides ``K``
(``layout_problem``).
"""

from __future__ import annotations

import torch

from slmc.quantization.formats import dequantize, pack

PAIR_BLOCK = 8  # inputs per block: 4 in the low nibbles, the next 4 in the high nibbles


def layout_problem(in_features: int) -> str | None:
    """Why a weight with ``in_features`` inputs cannot be stored in this layout, or ``None``."""
    if in_features % PAIR_BLOCK:
        return (f"w4a8 stores int4 codes paired in blocks of {PAIR_BLOCK} inputs: in_features {in_features} is not a "
                f"multiple of {PAIR_BLOCK}")
    return None


def pack_paired(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes ``[N, K]`` (each below 16) -> the stored ``qweight [N, K/2]`` (see the module docstring)."""
    n, k = codes.shape
    blocks = codes.to(torch.uint8).reshape(n, k // PAIR_BLOCK, 2, PAIR_BLOCK // 2)
    return (blocks[:, :, 0] | (blocks[:, :, 1] << 4)).reshape(n, k // 2).contiguous()


def unpack_paired(qweight: torch.Tensor) -> torch.Tensor:
    """The stored ``qweight [N, K/2]`` -> uint8 codes ``[N, K]``."""
    n, half = qweight.shape
    blocks = qweight.reshape(n, half * 2 // PAIR_BLOCK, PAIR_BLOCK // 2)
    return torch.stack((blocks & 0x0F, blocks >> 4), dim=2).reshape(n, half * 2)


def dequantize_paired(qweight: torch.Tensor, scales: torch.Tensor, group_size: int,
                      scale_code_bits: int | None = None) -> torch.Tensor:
    """float32 ``[N, K]``: ``(c - 8) * scale`` per group, from the paired ``qweight`` and float16 ``scales [N, G]``
    (or uint8 scale codes; ``scale_code_bits`` 6: packed 6-bit codes, ``formats.unpack_scale_codes``: then the
    scale is the code, without the row scale the op's caller applies)."""
    return dequantize(pack(unpack_paired(qweight), 4), scales, None, 4, group_size, scale_code_bits)
