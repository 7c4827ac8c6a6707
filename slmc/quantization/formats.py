"""Storage formats of quantized weights, and round-to-nearest quantization into them.

A weight ``W [N, K]`` (``N`` output rows, ``K`` input channels) is quantized in groups of
``group_size`` consecutive input channels of one row (per-channel: one group of ``K``). Each group
has a scale ``s`` and a zero point ``z``; a code ``q`` in ``[0, 2^bits - 1]`` stands for
``(q - z) * s``. Symmetric quantization fixes ``z = 2^(bits-1)`` (no zero points are stored) and
``s = max|w| / (2^(bits-1) - 1)``; asymmetric stores ``z`` per group (uint8) and
``s = (max w - min w) / (2^bits - 1)``.

Stored tensors (every one indexed by output row first, so rows can be concatenated or sliced):

- ``qweight``: uint8 ``[N, K * bits / 8]``: int8 codes one per byte; int4 codes two per byte,
  channel ``2j`` in the low nibble and ``2j + 1`` in the high nibble;
- ``scales``: float16 ``[N, K / group_size]`` (the dequantization uses them widened to float32);
- ``zeros``: uint8 ``[N, K / group_size]`` codes, asymmetric only.

Int4 with group 32 and symmetric scales costs ``4 + 16/32 = 4.5`` bits per weight.

A format with ``scale_codes`` stores each group's scale as a uint8 code ``c`` in ``[1, 255]`` times a float16
scale ``r`` of its output row (double quantization of the scales: QLoRA, Dettmers et al. 2023,
arXiv:2305.14314, Section 3; llama.cpp's k-quants keep 6-bit scales under a float16 super-scale per 256
weights). The group's scale is ``c * r``; ``r`` is the row's largest min-max group scale over 255. Int4 g32
then costs ``4 + 8/32 + 16/K`` bits per weight (4.3125 at ``K = 256``) instead of 4.5. The row scale
multiplies every weight of the row, so it factors out of the row's dot product: the kernels run the codes
as scales unchanged (they widen any scale dtype to float32) and the row scale is applied once per output
(``passes/quantize.py``). Stored tensors: ``scales`` uint8 ``[N, K / group_size]`` codes and
``row_scales`` float16 ``[N]``.

``scale_code_bits = 6`` stores the codes in 6 bits, ``c`` in ``[1, 63]`` (``r`` is then the row's largest
min-max group scale over 63), as llama.cpp's Q4_K/Q5_K do: int4 g32 costs ``4 + 6/32 + 16/K`` bits per weight,
exactly 4.25 at ``K = 256``. Layout (``pack_scale_codes``): each row's codes, padded with zero codes to a
multiple of 4, four codes per 3 bytes: codes ``4j .. 4j + 3`` are the bits ``0-5, 6-11, 12-17, 18-23`` of the
little-endian 24-bit word in bytes ``3j .. 3j + 2``; ``scales`` is uint8 ``[N, 3 * ceil(G / 4)]``. Dense (no
bit is wasted but a row's padding, at most 18 bits), rows first like every stored tensor (rows can be
concatenated or sliced), and a kernel reads one code with three byte loads, two shifts and a mask
(``slmc.quantization.tvm_kernels``), with no code spanning rows or words.

A format with ``clip`` chooses each group's range by search instead of min-max: the range is shrunk by
each factor of ``clip_factors()`` and the one with the smallest squared rounding error of the group is
kept (the MSE grid of GPTQ's reference ``Quantizer.find_params(mse=True)``, Frantar et al. 2022, and of
llama.cpp's k-quants). Clipping trades the rare extreme weights for a finer step on all the others. The
stored tensors are the same, so every kernel that runs the format runs its clipped variant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SCALE_DTYPE = torch.float16
BITS = (4, 8)
CLIP_GRID = 20          # range shrink factors tried by a clip search ...
CLIP_MAX_SHRINK = 0.5   # ... evenly from 1 down to (not including) 1 - CLIP_MAX_SHRINK
SCALE_CODE_BITS = (6, 8)  # widths of scale codes (scale_codes): 1..2^bits - 1 times the row's float16 scale
SCALE_CODE_MAX = 255    # uint8 scale codes' largest value (8-bit codes)
CODES_PER_WORD = 4      # 6-bit scale codes per 3-byte word (pack_scale_codes)
WORD_BYTES = 3
ROW_SCALE_DTYPE = torch.float16


@dataclass(frozen=True)
class QuantFormat:
    """Bits, group size (``None``: per output channel) and symmetry of a quantized weight; ``clip``: its
    group ranges are chosen by a clip search (module docstring; same storage); ``scale_codes``: integer
    scale codes of ``scale_code_bits`` (6 or 8) bits times a float16 scale per output row instead of float16
    scales (module docstring)."""

    bits: int
    group_size: int | None
    symmetric: bool
    clip: bool = False
    scale_codes: bool = False
    scale_code_bits: int = 8

    def __post_init__(self) -> None:
        if self.bits not in BITS:
            raise ValueError(f"bits must be one of {BITS}, got {self.bits}")
        if self.scale_codes and self.group_size is None:
            raise ValueError("scale_codes needs a group_size: per-channel scales have one scale per row already")
        if self.scale_code_bits not in SCALE_CODE_BITS:
            raise ValueError(f"scale_code_bits must be one of {SCALE_CODE_BITS}, got {self.scale_code_bits}")
        if self.scale_code_bits != 8 and not self.scale_codes:
            raise ValueError(f"scale_code_bits {self.scale_code_bits} needs scale_codes")

    @property
    def scale_code_max(self) -> int:
        """The largest scale code (``scale_codes``): ``2^scale_code_bits - 1``."""
        return 2**self.scale_code_bits - 1

    @property
    def packed_scale_bits(self) -> int | None:
        """6 when the stored scales are 6-bit codes packed four per three bytes (``pack_scale_codes``), else
        ``None`` (one stored element per group: float16 scales or uint8 codes)."""
        return self.scale_code_bits if self.scale_codes and self.scale_code_bits == 6 else None

    @property
    def levels(self) -> int:
        return 2**self.bits

    @property
    def mid(self) -> int:
        """The implicit zero point of symmetric codes."""
        return 2 ** (self.bits - 1)

    def group(self, in_features: int) -> int:
        """The group size for a weight with ``in_features`` channels (per-channel: all of them)."""
        return in_features if self.group_size is None else self.group_size

    def check_shape(self, out_features: int, in_features: int) -> str | None:
        """Why a ``[out, in]`` weight cannot take this format, or ``None``."""
        if in_features % self.group(in_features):
            return f"in_features {in_features} is not a multiple of group_size {self.group_size}"
        if self.bits == 4 and in_features % 2:
            return f"int4 packs two channels per byte: in_features {in_features} must be even"
        return None

    def describe(self) -> str:
        grouping = "per-channel" if self.group_size is None else f"g{self.group_size}"
        return (f"int{self.bits} {grouping} {'symmetric' if self.symmetric else 'asymmetric'}"
                + (f" {self.scale_code_bits}-bit scales x float16 row scale" if self.scale_codes else "") + (" clip-searched" if self.clip else ""))


@dataclass
class QuantizedWeight:
    """Codes (unpacked, uint8 ``[N, K]``), scales (float16 ``[N, G]``; uint8 codes with ``fmt.scale_codes``, unpacked
    also for 6-bit codes: ``stored_scales`` packs them), zero points (uint8 ``[N, G]`` or None), row scales (float16 ``[N]`` with ``fmt.scale_codes``, else None)."""

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    fmt: QuantFormat
    row_scales: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.codes.shape[0]), int(self.codes.shape[1])

    def packed(self) -> torch.Tensor:
        return pack(self.codes, self.fmt.bits)

    def stored_scales(self) -> torch.Tensor:
        """The ``scales`` tensor as stored: 6-bit codes packed (``pack_scale_codes``), others as they are."""
        bits = self.fmt.packed_scale_bits
        return self.scales if bits is None else pack_scale_codes(self.scales, bits)

    def dequantize(self) -> torch.Tensor:
        weight = dequantize(self.packed(), self.scales, self.zeros, self.fmt.bits, self.fmt.group(self.shape[1]))
        return weight if self.row_scales is None else weight * self.row_scales.to(torch.float32).unsqueeze(1)

    def stored_bytes(self) -> int:
        """Bytes of the packed codes, scales, zero points and row scales."""
        n, k = self.shape
        scales = self.stored_scales()
        total = n * k * self.fmt.bits // 8 + scales.numel() * scales.element_size()
        rows = self.row_scales.numel() * self.row_scales.element_size() if self.row_scales is not None else 0
        return total + (self.zeros.numel() if self.zeros is not None else 0) + rows


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes ``[N, K]`` -> the stored ``qweight`` (see the module docstring)."""
    codes = codes.to(torch.uint8)
    if bits == 8:
        return codes.contiguous()
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).contiguous()


def unpack(qweight: torch.Tensor, bits: int) -> torch.Tensor:
    """The stored ``qweight`` -> uint8 codes ``[N, K]``."""
    if bits == 8:
        return qweight
    low, high = qweight & 0x0F, qweight >> 4
    return torch.stack((low, high), dim=-1).reshape(qweight.shape[0], -1)


def packed_scale_columns(groups: int, scale_code_bits: int | None) -> int:
    """Stored columns of ``scales`` for ``groups`` groups per row: ``groups``, or for 6-bit codes
    ``3 * ceil(groups / 4)`` bytes (``pack_scale_codes``)."""
    if scale_code_bits is None or scale_code_bits == 8:
        return groups
    return WORD_BYTES * -(-groups // CODES_PER_WORD)


def pack_scale_codes(codes: torch.Tensor, scale_code_bits: int) -> torch.Tensor:
    """uint8 scale codes ``[N, G]`` (each below ``2^scale_code_bits``) -> the stored ``scales`` (module
    docstring): 8-bit codes as they are; 6-bit codes four per three bytes, rows padded with zero codes."""
    if scale_code_bits == 8:
        return codes.to(torch.uint8).contiguous()
    if scale_code_bits != 6:
        raise ValueError(f"scale_code_bits must be one of {SCALE_CODE_BITS}, got {scale_code_bits}")
    if codes.numel() and int(codes.max()) > 63:
        raise ValueError(f"6-bit scale codes must be below 64, got {int(codes.max())}")
    n, g = codes.shape
    words = -(-g // CODES_PER_WORD)
    padded = torch.zeros((n, words * CODES_PER_WORD), dtype=torch.int32)
    padded[:, :g] = codes.to(torch.int32)
    quads = padded.reshape(n, words, CODES_PER_WORD)
    word = quads[..., 0] | (quads[..., 1] << 6) | (quads[..., 2] << 12) | (quads[..., 3] << 18)
    packed = torch.stack([(word >> (8 * b)) & 0xFF for b in range(WORD_BYTES)], dim=-1)
    return packed.reshape(n, words * WORD_BYTES).to(torch.uint8).contiguous()


def unpack_scale_codes(scales: torch.Tensor, scale_code_bits: int, groups: int) -> torch.Tensor:
    """The stored ``scales`` of 6-bit codes ``[N, 3 * ceil(groups / 4)]`` -> uint8 codes ``[N, groups]``
    (``pack_scale_codes`` inverted; 8-bit codes are returned as they are)."""
    if scale_code_bits == 8:
        return scales
    n, columns = scales.shape
    if columns != packed_scale_columns(groups, scale_code_bits):
        raise ValueError(f"6-bit scale codes of {groups} groups take {packed_scale_columns(groups, scale_code_bits)} "
                         f"bytes per row, got {columns}")
    data = scales.to(torch.int32).reshape(n, columns // WORD_BYTES, WORD_BYTES)
    word = data[..., 0] | (data[..., 1] << 8) | (data[..., 2] << 16)
    codes = torch.stack([(word >> (6 * j)) & 63 for j in range(CODES_PER_WORD)], dim=-1)
    return codes.reshape(n, -1)[:, :groups].to(torch.uint8)


def dequantize(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, bits: int,
               group_size: int, scale_code_bits: int | None = None) -> torch.Tensor:
    """float32 ``[N, K]``: ``(q - z) * s`` per group (``z = 2^(bits-1)`` when ``zeros`` is None); with
    ``scale_code_bits`` 6, ``scales`` are packed 6-bit codes (``unpack_scale_codes``)."""
    codes = unpack(qweight, bits).to(torch.float32)
    n, k = codes.shape
    if scale_code_bits is not None:
        scales = unpack_scale_codes(scales, scale_code_bits, k // group_size)
    grouped = codes.reshape(n, k // group_size, group_size)
    zero = (zeros.to(torch.float32) if zeros is not None else torch.full(scales.shape, 2.0 ** (bits - 1))).unsqueeze(-1)
    return ((grouped - zero) * scales.to(torch.float32).unsqueeze(-1)).reshape(n, k)


def clip_factors(grid: int = CLIP_GRID, max_shrink: float = CLIP_MAX_SHRINK) -> list[float]:
    """The range shrink factors a clip search tries (1 first: min-max is always a candidate)."""
    return [1.0 - max_shrink * i / grid for i in range(grid)]


def _ideal_scale(w: torch.Tensor, fmt: QuantFormat, shrink: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The unrounded float32 scale of each row of ``w [N, g]`` for its min-max (or abs-max) range times
    ``shrink``, and (asymmetric) the range's low end."""
    if fmt.symmetric:
        return shrink * w.abs().amax(dim=1) / (fmt.mid - 1), None
    low = shrink * w.amin(dim=1).clamp_max(0.0)
    high = shrink * w.amax(dim=1).clamp_min(0.0)
    return (high - low) / (fmt.levels - 1), low


def row_scales(w: torch.Tensor, fmt: QuantFormat) -> torch.Tensor:
    """float16 ``[N]``: each row's largest min-max group scale over ``fmt.scale_code_max`` (``fmt.scale_codes``),
    so that every group's min-max scale is a code of at most ``fmt.scale_code_max``."""
    n, k = w.shape
    g = fmt.group(k)
    ideal, _ = _ideal_scale(w.detach().to(torch.float32).reshape(n * (k // g), g), fmt, 1.0)
    return (ideal.reshape(n, k // g).amax(dim=1) / fmt.scale_code_max).clamp_min(torch.finfo(ROW_SCALE_DTYPE).tiny).to(ROW_SCALE_DTYPE)


def _stored_scale(ideal: torch.Tensor, fmt: QuantFormat, row_scale: torch.Tensor | None) -> torch.Tensor:
    """The scale as stored, as its value: float16-rounded, or (``fmt.scale_codes``) the nearest code in
    ``[1, fmt.scale_code_max]`` times ``row_scale`` (float32, exact: an 8-bit code times a float16)."""
    if not fmt.scale_codes:
        return ideal.clamp_min(torch.finfo(SCALE_DTYPE).tiny).to(SCALE_DTYPE)
    if row_scale is None:
        raise ValueError(f"{fmt.describe()} needs the rows' scales (formats.row_scales)")
    row = row_scale.to(torch.float32)
    return torch.round(ideal / row).clamp(1, fmt.scale_code_max) * row


def range_parameters(w: torch.Tensor, fmt: QuantFormat, shrink: float,
                     row_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scales (as stored: float16, or the float32 value of a scale code times ``row_scale [N]``) and zero
    points (float codes, or None) of each row of ``w [N, g]`` for its min-max (or abs-max) range times ``shrink``."""
    ideal, low = _ideal_scale(w, fmt, shrink)
    scale = _stored_scale(ideal, fmt, row_scale)
    if low is None:
        return scale, None
    return scale, torch.round(-low / scale.to(torch.float32)).clamp(0, fmt.levels - 1)


def group_parameters(w: torch.Tensor, fmt: QuantFormat,
                     row_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scales (as stored, ``range_parameters``) and zero points (float codes, or None) of each row of ``w [N, g]``.

    ``w`` holds one group per row; ``row_scale [N]``: each group's row scale (``fmt.scale_codes`` only).
    Scales are rounded as stored *before* codes are chosen, so the codes are optimal for the scales that
    are actually stored. With ``fmt.clip`` each row keeps the shrink factor of ``clip_factors()`` whose
    codes have the smallest squared error on that row.
    """
    w = w.to(torch.float32)
    if not fmt.clip:
        return range_parameters(w, fmt, 1.0, row_scale)
    best_scale, best_zero, best_error = None, None, None
    for shrink in clip_factors():
        scale, zero = range_parameters(w, fmt, shrink, row_scale)
        codes = quantize_group(w, scale, zero, fmt)
        zero_value = zero if zero is not None else torch.full_like(codes[:, 0], float(fmt.mid))
        error = ((codes - zero_value.unsqueeze(1)) * scale.to(torch.float32).unsqueeze(1) - w).square().sum(dim=1)
        if best_error is None:
            best_scale, best_zero, best_error = scale, zero, error
            continue
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best_scale = torch.where(better, scale, best_scale)
        best_zero = None if zero is None else torch.where(better, zero, best_zero)
    return best_scale, best_zero


def quantize_group(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None, fmt: QuantFormat) -> torch.Tensor:
    """Codes of ``w [N, g]`` (or ``[N]``) for per-row ``scale``/``zero`` (shapes ``[N]``)."""
    s = scale.to(torch.float32)
    z = zero if zero is not None else torch.full_like(s, float(fmt.mid))
    if w.ndim == 2:
        s, z = s.unsqueeze(1), z.unsqueeze(1)
    high = fmt.levels - 1
    return torch.clamp(torch.round(w.to(torch.float32) / s) + z, 0 if not fmt.symmetric else 1, high)


def stored_scales(scales: torch.Tensor, fmt: QuantFormat, rows: torch.Tensor | None) -> torch.Tensor:
    """The stored ``scales`` tensor of scale values ``[N, G]`` (as ``range_parameters`` gives them): float16,
    or (``fmt.scale_codes``) their uint8 codes (unpacked) for the row scales ``rows [N]``."""
    if not fmt.scale_codes:
        return scales.to(SCALE_DTYPE)
    if rows is None:
        raise ValueError(f"{fmt.describe()} needs the rows' scales (formats.row_scales)")
    return torch.round(scales.to(torch.float32) / rows.to(torch.float32).unsqueeze(1)).clamp(1, fmt.scale_code_max).to(torch.uint8)


def assemble(codes: torch.Tensor, scales: list[torch.Tensor], zeros: list[torch.Tensor | None], fmt: QuantFormat,
             rows: torch.Tensor | None = None) -> QuantizedWeight:
    """A ``QuantizedWeight`` from float codes ``[N, K]``, per-group scale/zero columns and (``fmt.scale_codes``)
    the row scales ``rows [N]`` the scales are codes of."""
    zero = None if fmt.symmetric else torch.stack([z for z in zeros if z is not None], dim=1).to(torch.uint8)
    return QuantizedWeight(codes.to(torch.uint8), stored_scales(torch.stack(scales, dim=1), fmt, rows), zero, fmt,
                           rows if fmt.scale_codes else None)


def quantize_rtn(w: torch.Tensor, fmt: QuantFormat) -> QuantizedWeight:
    """Round-to-nearest quantization of ``w [N, K]`` with per-group min-max (or abs-max) ranges."""
    n, k = w.shape
    g = fmt.group(k)
    w = w.detach().to(torch.float32)
    groups = w.reshape(n * (k // g), g)
    rows = row_scales(w, fmt) if fmt.scale_codes else None
    scale, zero = group_parameters(groups, fmt, None if rows is None else rows.repeat_interleave(k // g))
    codes = quantize_group(groups, scale, zero, fmt).reshape(n, k)
    zeros = None if zero is None else zero.reshape(n, k // g).to(torch.uint8)
    return QuantizedWeight(codes.to(torch.uint8), stored_scales(scale.reshape(n, k // g), fmt, rows), zeros, fmt, rows)
