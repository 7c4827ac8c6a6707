"""The resident KV cache's page-size choice (slmc.artifact.kv_pages; the native runner's kv_pages.hpp is the same
rule): 4 KB pages unless huge pages make about the context used resident."""

from __future__ import annotations

import numpy as np

from slmc.artifact.kv_pages import HUGE_PAGE_BYTES, ZeroPages, huge_page_resident_bytes, used_bytes

SMOLLM_KEYS = (30, 1, 3, 2009, 64)  # SmolLM-135M's keys at the bench's max_context 2,008: rows of 514 KB


def test_the_cache_is_zeros_on_a_2_mb_boundary_and_writable():
    pages = ZeroPages(SMOLLM_KEYS, np.dtype(np.float32))
    assert pages.array.ctypes.data % HUGE_PAGE_BYTES == 0 and pages.array.flags.writeable
    assert pages.array.shape == SMOLLM_KEYS and not pages.array[:, :, :, :8].any()
    pages.array[0, 0, 0, 0, 0] = 1.0
    assert pages.array.sum() == 1.0


def test_huge_pages_would_make_the_whole_cache_resident_at_a_short_context():
    array = ZeroPages(SMOLLM_KEYS, np.dtype(np.float32)).array
    rows = 30 * 3
    assert used_bytes(array, 160) == rows * 160 * 64 * 4
    # four 514 KB rows share a 2 MB page: any written slot makes every page resident
    assert huge_page_resident_bytes(array, 1) == huge_page_resident_bytes(array, 1036) == 22 * HUGE_PAGE_BYTES
    # the last partial 2 MB of the array is never a huge page: at full context, exactly the bytes written
    assert huge_page_resident_bytes(array, 2009) == used_bytes(array, 2009) == array.nbytes


def test_huge_pages_are_asked_for_only_when_they_cost_page_rounding():
    short = ZeroPages(SMOLLM_KEYS, np.dtype(np.float32))
    assert not short.advise_huge_pages_for(1036) and not short.huge_pages
    assert not short.advise_huge_pages_for(1911)  # 84 of 88 MB: huge pages would add 4% (> 1/64)
    long = ZeroPages(SMOLLM_KEYS, np.dtype(np.float32))
    assert long.advise_huge_pages_for(2007) and long.huge_pages


def test_an_int8_caches_scales_are_rows_of_one_number_per_slot():
    scales = ZeroPages(SMOLLM_KEYS[:4], np.dtype(np.float32)).array
    assert used_bytes(scales, 10) == 90 * 10 * 4
    assert huge_page_resident_bytes(scales, 10) == used_bytes(scales, 10)  # 723 KB: no whole 2 MB page in it


def test_a_cache_smaller_than_a_huge_page_never_asks_for_them():
    tiny = ZeroPages((4, 1, 4, 513, 32), np.dtype(np.float32))  # fixture-lm's keys: 1 MB
    assert not tiny.advise_huge_pages_for(513) and not tiny.huge_pages
