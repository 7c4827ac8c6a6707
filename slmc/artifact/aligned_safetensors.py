"""Writes ``weights.safetensors`` so that every tensor's data starts on a 64-byte boundary, and maps it back.

TVM accepts external (zero-copy) buffers only when aligned like its own allocations
(``kAllocAlignment`` = 64 bytes), and its kernels are compiled assuming that alignment. The native
runtime memory-maps the weight file and hands TVM views of the mapping, so the file is laid out for
it: the JSON header is padded with trailing spaces (allowed by the safetensors format) until the
data section starts at a multiple of 64, and where a tensor's size is not a multiple of 64 the gap
before the next tensor is filled by a ``uint8`` padding tensor named ``__slmc_pad_<k>`` (the format
forbids unindexed bytes). The result is an ordinary safetensors file: ``safetensors.numpy.load_file``
reads it, and slmc's loaders pick tensors by the manifest's ``weights.order``, never the padding.

``map_tensors`` is the Python runtime's reader: numpy views of a copy-on-write memory mapping of the
file, so loading reads no data and the weights' pages are the page cache's, shared with every
process mapping the same file (``slmc.artifact.runtime`` hands them to TVM without a copy).

Precondition: every array is C-contiguous with a dtype listed in ``SAFETENSORS_DTYPES``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from slmc.errors import ArtifactError

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


def map_tensors(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The tensors ``names`` of the safetensors file ``path`` as views of one copy-on-write memory
    mapping (``np.memmap`` mode ``c``: writeable views, writes stay private to the process, the file
    is never changed). ``ArtifactError`` naming the file and tensor for a missing or malformed entry."""
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        raise ArtifactError(f"{path}: too short for a safetensors file ({size} bytes)")
    mapping = np.memmap(path, dtype=np.uint8, mode="c")
    (header_len,) = struct.unpack("<Q", mapping[:8].tobytes())
    if header_len > size - 8:
        raise ArtifactError(f"{path}: safetensors header length {header_len} exceeds the file ({size} bytes)")
    try:
        header = json.loads(mapping[8:8 + header_len].tobytes())
    except ValueError as exc:
        raise ArtifactError(f"{path}: the safetensors header is not JSON: {exc}") from exc
    data = mapping[8 + header_len:]
    codes = {code: name for name, code in SAFETENSORS_DTYPES.items()}
    out = {}
    for name in names:
        entry = header.get(name) if isinstance(header, dict) else None
        where = f"{path}: tensor '{name}'"
        if not isinstance(entry, dict):
            raise ArtifactError(f"{where} (named in the manifest's weights) is missing")
        dtype_name = codes.get(entry.get("dtype"))
        try:
            dtype = np.dtype(dtype_name) if dtype_name is not None else None
        except TypeError:  # bfloat16: numpy has no such dtype of its own
            dtype = None
        if dtype is None:
            raise ArtifactError(f"{where}: dtype {entry.get('dtype')!r} has no numpy dtype "
                                f"(readable: {sorted(c for c, n in codes.items() if n != 'bfloat16')})")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)):
            raise ArtifactError(f"{where}: 'shape' must be a list of sizes and 'data_offsets' [begin, end]")
        begin, end = offsets
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if not 0 <= begin <= end <= data.size or end - begin != nbytes:
            raise ArtifactError(f"{where}: data_offsets [{begin}, {end}) do not hold its {nbytes} bytes inside the "
                                f"data section ({data.size} bytes)")
        out[name] = data[begin:end].view(dtype).reshape(shape)
    return out
