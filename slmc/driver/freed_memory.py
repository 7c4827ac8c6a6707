"""Giving memory the compile freed back to the operating system.

glibc's ``malloc`` serves a request of up to its mmap threshold from its heaps, and raises that
threshold (up to 32 MB on 64-bit) each time it frees a larger mapped chunk: after the first
weight-sized buffer is freed, the next weight-sized ones (a transformer's matrices are 1 to 20 MB)
come from the heaps, and freeing them keeps them in the process (RSS) for later reuse. A compile
frees a model's worth of such buffers after lowering (TVM's copies of the weights, relaid arrays)
and again once the weights file is written; ``malloc_trim(0)`` returns the free pages of every heap
(issue 22: the 0.5B compile's peak). On a C library without ``malloc_trim`` (musl, macOS) this does
nothing: their allocators return large blocks on their own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    library = ctypes.CDLL(name) if name else None
    return getattr(library, "malloc_trim", None)


def return_freed_memory() -> None:
    """Hand the free pages of the C heaps back to the operating system (glibc ``malloc_trim(0)``)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
