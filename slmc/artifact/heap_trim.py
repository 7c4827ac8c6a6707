"""Give the C heap's free pages back to the system once an artifact is loaded (issue 22.3).

Loading imports the manifest's pydantic schemas and TVM's FFI; building them frees several MB of temporary
objects (core schemas, JSON) that glibc's allocator keeps in the process's heap, resident, below the pages
still in use. The weights' pages come after them, so they count in the peak RSS of every generation
(SmolLM-135M W4A8: about 2 MB of a 60 MB allowance, docs/dev-notes.md session 12). ``malloc_trim(0)``
(glibc >= 2.8, malloc(3)) releases every whole free page of the heap, not only its top. Elsewhere (musl,
macOS, Windows: no such call) nothing is done: it is a saving, not a requirement.
"""

from __future__ import annotations

import ctypes
from functools import cache
from typing import Any


@cache
def _libc() -> Any:
    """The process's global symbols (``dlopen(NULL)``: the C library the interpreter runs on) if they hold glibc's
    ``malloc_trim``, else None. No library search (``ctypes.util.find_library`` starts processes)."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:  # a platform without dlopen(NULL) (Windows)
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def release_free_heap() -> bool:
    """Return the heap's free pages to the system (``malloc_trim(0)``); False where the C library has no such
    call. Safe at any time: only pages no allocation holds are released."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
