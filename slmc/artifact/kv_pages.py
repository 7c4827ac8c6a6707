"""The page size of the resident KV cache, chosen for the context a generation will use.

The cache ``[L, 1, H_kv, max_context + 1, D]`` is one row of ``max_context + 1`` slots per (layer, head), and a
generation writes the first slots of every row. Transparent huge pages make the decode step's reads of the
cache cheaper (fewer TLB misses: 6-25% at context 2,000, docs/dev-notes.md session 8), but a 2 MB page becomes
resident as a whole on its first write, and a row of a small model is shorter than that (SmolLM-135M:
2,009 x 64 floats = 514 KB): with huge pages the first prefill makes the whole cache resident, whatever the
context. So the cache starts on 4 KB pages (``MADV_NOHUGEPAGE``, also where THP is ``always``; numpy would
ask for huge pages for any array of 4 MB and more) and asks for huge pages only when the pages they make
resident are about the cache at the context used (``HUGE_PAGE_WASTE``).

The native runner makes the same choice (slmc/native/runtime/kv_pages.hpp, the same rule and constants).
"""

from __future__ import annotations

import mmap

import numpy as np

# Bytes of a transparent huge page (PMD size with 4 KB base pages: x86-64 and arm64).
HUGE_PAGE_BYTES = 2 << 20
# Huge pages are asked for when the bytes they would make resident exceed the cache at the context used by at
# most this fraction of it (1/64: page rounding; kv_pages.hpp says why it is small).
HUGE_PAGE_WASTE = 1 / 64


class ZeroPages:
    """A zero-filled array of its own anonymous mapping (page aligned): its pages become resident only when
    written, 4 KB until ``advise_huge_pages_for`` asks for huge ones."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        count = int(np.prod(shape, dtype=np.int64))
        # a 2 MB page's worth more, so that the array can start on a huge page (pages never written cost nothing)
        self._map = mmap.mmap(-1, max(count * np.dtype(dtype).itemsize, 1) + HUGE_PAGE_BYTES,
                              flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        start = np.frombuffer(self._map, dtype=np.uint8, count=1).ctypes.data
        self._offset = -start % HUGE_PAGE_BYTES
        self.array = np.frombuffer(self._map, dtype=dtype, count=count, offset=self._offset).reshape(shape)
        self._advise(getattr(mmap, "MADV_NOHUGEPAGE", None))
        self.huge_pages = False

    def _advise(self, advice: int | None) -> bool:
        """Advise the array's own range (never the spare bytes after it, which huge_page_resident_bytes does not
        count); False where the system has no such advice (off Linux) or refuses it (a kernel without
        transparent huge pages answers EINVAL): the system's page size then serves."""
        if advice is None:
            return False
        try:
            self._map.madvise(advice, self._offset, max(self.array.nbytes, 1))
        except OSError:
            return False
        return True

    def advise_huge_pages_for(self, slots: int) -> bool:
        """Ask for huge pages (``MADV_HUGEPAGE``) when, with ``slots`` slots per row in use, they make at most
        ``HUGE_PAGE_WASTE`` more resident than those slots; returns whether it asked (advice only: pages already
        written keep their size)."""
        if self.array.nbytes < HUGE_PAGE_BYTES:  # no whole huge page in it (it starts on 2 MB): nothing to ask
            return False
        used = used_bytes(self.array, slots)
        if used == 0 or huge_page_resident_bytes(self.array, slots) > used * (1 + HUGE_PAGE_WASTE):
            return False
        self.huge_pages = self._advise(getattr(mmap, "MADV_HUGEPAGE", None))
        return self.huge_pages


def _rows(array: np.ndarray) -> tuple[int, int, int]:
    """(rows, bytes of one slot, bytes of a row) of a cache or its scales, slots on axis 3."""
    rows = int(np.prod(array.shape[:3]))
    slot = int(np.prod(array.shape[4:], dtype=np.int64)) * array.itemsize
    return rows, slot, slot * array.shape[3]


def used_bytes(array: np.ndarray, slots: int) -> int:
    """Bytes of the first ``slots`` slots of every row (what 4 KB pages make resident, to a page per row)."""
    rows, slot, _ = _rows(array)
    return rows * slot * min(max(slots, 0), array.shape[3])


def huge_page_resident_bytes(array: np.ndarray, slots: int) -> int:
    """Bytes resident with huge pages when every row has its first ``slots`` slots written: the distinct 2 MB
    pages touched among those wholly inside the array's bytes (at its address), plus the written bytes outside
    them (4 KB pages: the kernel maps a huge page only where the whole 2 MB belong to the mapping)."""
    rows, slot, row = _rows(array)
    written = slot * min(max(slots, 0), array.shape[3])
    if written == 0:
        return 0
    base = array.ctypes.data
    low = -(-base // HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES
    high = (base + array.nbytes) // HUGE_PAGE_BYTES * HUGE_PAGE_BYTES
    starts = base + np.arange(rows, dtype=np.int64) * row
    inner_start, inner_end = np.maximum(starts, low), np.minimum(starts + written, high)
    inside = inner_end > inner_start
    outside = int(np.sum(written - np.where(inside, inner_end - inner_start, 0)))
    first, end = inner_start[inside] // HUGE_PAGE_BYTES, (inner_end[inside] - 1) // HUGE_PAGE_BYTES
    shared = int(np.count_nonzero(first[1:] == end[:-1]))  # rows ascend: a page shared with the previous row
    return (int(np.sum(end - first + 1)) - shared) * HUGE_PAGE_BYTES + outside
