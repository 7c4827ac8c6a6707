"""Reading a quantized weight's group scale in a TVM kernel: float16 scales, uint8 scale codes, or 6-bit scale codes
packed four per three bytes (``slmc.quantization.formats.pack_scale_codes``).

Shared by the weight-only kernels (``slmc.quantization.tvm_kernels``) and the int4 x int8 kernel
(``slmc.quantization.w4a8_kernel``), so both unpack the codes the same way: once per group, where the scale is
applied. Scale codes are double-quantized scales (QLoRA, Dettmers et al. 2023, arXiv:2305.14314, Section 3): the
row's float16 scale is applied after the kernel (``passes/quantize.py``), so the kernel runs the codes as its scales.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tvm import tirx

SCALE_CODES_PER_WORD = 4  # 6-bit scale codes per 3-byte word (slmc.quantization.formats.pack_scale_codes)
SCALE_WORD_BYTES = 3


def group_scale(read: Callable[[Any], Any], group: Any, scale_code_bits: int | None) -> Any:
    """The float32 scale (or scale code) of ``group``, where ``read(column)`` is the stored ``scales`` element at
    that column for the weight's output channel. ``scale_code_bits`` ``None``: one element per group (float16
    scales or uint8 codes, widened); 6: codes packed four per three bytes (``formats.pack_scale_codes``): the three
    bytes of the group's word, combined little-endian into 24 bits, shifted by 6 per code before it and masked to
    6 bits. ``ValueError`` for any other width."""
    if scale_code_bits is None:
        return read(group).astype("float32")
    if scale_code_bits != 6:
        raise ValueError(f"scale_code_bits must be None or 6 (packed 6-bit scale codes), got {scale_code_bits}")
    base = tirx.floordiv(group, SCALE_CODES_PER_WORD) * SCALE_WORD_BYTES
    word = read(base).astype("uint32")
    for byte in range(1, SCALE_WORD_BYTES):
        word = tirx.bitwise_or(word, tirx.shift_left(read(base + byte).astype("uint32"), tirx.const(8 * byte, "uint32")))
    shift = (tirx.floormod(group, SCALE_CODES_PER_WORD) * 6).astype("uint32")
    return tirx.bitwise_and(tirx.shift_right(word, shift), tirx.const(63, "uint32")).astype("float32")
