"""Release the resident pages of a loaded library's serialized modules (issue 22.3).

A library TVM exports (``model.so``) carries its Relax VM executable and module tree serialized in the
read-only symbol ``__tvm_ffi__library_bin`` (a little-endian uint64 byte count, then the bytes; TVM-FFI
``src/ffi/extra/library_module.cc``, ``ProcessLibraryBin``). ``tvm_ffi.load_module`` reads it once and
deserializes it onto the heap; the symbol's pages stay resident, a second copy that is never read again
(SmolLM-135M W4A8: 1.0 MB of a 60 MB allowance; docs/dev-notes.md session 12). ``madvise(MADV_DONTNEED)`` drops
them: the mapping is private, read-only and unmodified, so a later read (a second load of the same library)
faults the same bytes back in from the file (madvise(2)). Only the whole pages inside the blob are released, and
only from a mapping without write permission; elsewhere than Linux, or without the symbol, nothing is done.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

BLOB_SYMBOL = "__tvm_ffi__library_bin"
MADV_DONTNEED = 4  # Linux <sys/mman.h>
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _read_only_mapping(start: int, end: int, maps: Path = Path("/proc/self/maps")) -> bool:
    """Whether ``[start, end)`` lies inside one mapping without write permission."""
    for line in maps.read_text().splitlines():
        span, perms = line.split()[:2]
        low, high = (int(bound, 16) for bound in span.split("-"))
        if low <= start and end <= high:
            return "w" not in perms
    return False


def release_library_blob(library: Path) -> int:
    """Drop the resident pages of ``library``'s serialized modules; the bytes released (0: none, or not here).
    Precondition: ``library`` is loaded in this process (``tvm_ffi.load_module``) and its blob was deserialized."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        handle = ctypes.CDLL(str(library), mode=os.RTLD_NOLOAD | os.RTLD_LAZY)  # the loaded library, not a second one
        address = ctypes.addressof(ctypes.c_char.in_dll(handle, BLOB_SYMBOL))
    except (OSError, ValueError):  # not loaded, or a library without serialized modules
        return 0
    size = 8 + ctypes.c_uint64.from_address(address).value
    start, end = -(-address // PAGE) * PAGE, (address + size) // PAGE * PAGE
    if end <= start or not _read_only_mapping(address, address + size):
        return 0
    libc = ctypes.CDLL(None)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.madvise(start, end - start, MADV_DONTNEED) != 0:
        return 0
    return end - start
