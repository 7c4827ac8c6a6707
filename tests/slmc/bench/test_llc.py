"""The last level cache the bench sizes its bandwidth sets and eviction by (slmc.bench.llc). No timing."""

from __future__ import annotations

import pytest

from slmc.bench import llc


def _cache_dir(tmp_path, entries):
    for i, (level, size) in enumerate(entries):
        entry = tmp_path / f"index{i}"
        entry.mkdir(parents=True)
        (entry / "level").write_text(f"{level}\n")
        (entry / "size").write_text(f"{size}\n")
    return tmp_path


@pytest.mark.parametrize("text, size", [("32768K", 32 * 2**20), ("1M", 2**20), ("2G", 2**31), ("512", 512), ("48k\n", 48 * 2**10)])
def test_sysfs_sizes_parse(text, size):
    assert llc.parse_size(text) == size


def test_the_largest_level_is_the_llc(tmp_path):
    # this machine's layout (2026-12-07): L1d 48K, L1i 32K, L2 1024K, L3 32768K
    found = llc.last_level_cache(_cache_dir(tmp_path, [(1, "48K"), (1, "32K"), (2, "1024K"), (3, "32768K")]))
    assert (found.bytes, found.level) == (32 * 2**20, 3) and "index3" in found.source
    assert found.to_json() == {"llc_bytes": 32 * 2**20, "llc_level": 3, "llc_source": found.source}


def test_unreadable_entries_are_left_out_and_none_means_the_documented_fallback(tmp_path):
    found = llc.last_level_cache(_cache_dir(tmp_path / "a", [(2, "1024K"), (3, "lots")]))
    assert (found.bytes, found.level) == (2**20, 2)
    for missing in (tmp_path / "none", _cache_dir(tmp_path / "b", [(3, "")])):
        fallback = llc.last_level_cache(missing)
        assert (fallback.bytes, fallback.level) == (llc.FALLBACK_LLC_BYTES, None) and "assumed 512 MiB" in fallback.source


def test_the_dram_set_is_4x_the_llc_at_least_1_gib_capped_by_a_quarter_of_available_memory():
    mib = 2**20
    assert llc.working_sets(32 * mib, 16 * 2**30) == llc.WorkingSets(2**30, 8 * mib, False)  # the floor: 32 x 32 MiB
    assert llc.working_sets(480 * mib, 16 * 2**30) == llc.WorkingSets(1920 * mib, 120 * mib, False)  # 4 x 480 MiB
    assert llc.working_sets(480 * mib, None).dram_bytes == 1920 * mib  # MemAvailable unknown: no cap
    capped = llc.working_sets(480 * mib, 4 * 2**30)
    assert capped.dram_bytes == 2**30 and capped.dram_capped  # a quarter of 4 GiB < 4 x 480 MiB: said so
    assert not llc.working_sets(32 * mib, 2**30).dram_capped  # capped to 256 MiB, still >= 4 x the LLC
    assert llc.eviction_bytes(32 * mib) == 64 * mib


def test_mem_available_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   16000000 kB\n")
    assert llc.available_bytes(meminfo) == 16000000 * 1024
    meminfo.write_text("MemTotal:       24000000 kB\n")
    assert llc.available_bytes(meminfo) is None and llc.available_bytes(tmp_path / "absent") is None
