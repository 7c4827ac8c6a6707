"""Writes ``weights.safetensors`` so that every tensor's data starts on a 64-byte boundary.

TVM accepts external (zero-copy) buffers only when aligned like its own allocations
(``kAllocAlignment`` = 64 bytes), and its kernels are compiled assuming that alignment. The native
runtime memory-maps the weight file and hands TVM views of the mapping, so the file is laid out for
it: the JSON header is padded with trailing spaces (allowed by the safetensors format) until the
data section starts at a multiple of 64, and where a tensor's size is not a multiple of 64 the gap
before the next tensor is filled by a ``uint8`` padding tensor named ``__slmc_pad_<k>`` (the format
forbids unindexed bytes). The result is an ordinary safetensors file: ``safetensors.numpy.load_file``
reads it, and slmc's loaders pick tensors by the manifest's ``weights.order``, never the padding.

Precondition: every array is C-contiguous with a dtype listed in ``SAFETENSORS_DTYPES``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

ALIGNMENT = 64
PAD_PREFIX = "__slmc_pad_"
SAFETENSORS_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
    "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL",
}


def save_aligned(tensors: dict[str, np.ndarray], path: Path) -> None:
    """Write ``tensors`` (in dict order) to ``path`` with 64-byte aligned data (module docstring)."""
    header: dict[str, dict[str, object]] = {}
    pieces: list[bytes | np.ndarray] = []
    offset = 0
    pads = 0
    for name, array in tensors.items():
        if name.startswith(PAD_PREFIX):
            raise ValueError(f"tensor name {name!r} uses the reserved prefix {PAD_PREFIX!r}")
        dtype = SAFETENSORS_DTYPES.get(str(array.dtype))
        if dtype is None:
            raise TypeError(f"tensor {name!r}: dtype {array.dtype} has no safetensors code (known: {sorted(SAFETENSORS_DTYPES)})")
        gap = -offset % ALIGNMENT
        if gap:
            header[f"{PAD_PREFIX}{pads}"] = {"dtype": "U8", "shape": [gap], "data_offsets": [offset, offset + gap]}
            pieces.append(bytes(gap))
            offset += gap
            pads += 1
        data = np.asarray(array, order="C")  # not ascontiguousarray, which makes a 0-d array 1-d
        header[name] = {"dtype": dtype, "shape": list(data.shape), "data_offsets": [offset, offset + data.nbytes]}
        pieces.append(data)
        offset += data.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % ALIGNMENT)
    with Path(path).open("wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for piece in pieces:
            f.write(piece if isinstance(piece, bytes) else piece.tobytes())
