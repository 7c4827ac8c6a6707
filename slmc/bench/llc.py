"""The last level cache (LLC) the bench sizes its bandwidth sets and its cache eviction by (issue 22).

A decode step is bound by the bandwidth of wherever its weights sit: a model that fits the LLC streams
from it, a larger one from DRAM, so a "% of the bandwidth bound" must say which bandwidth it divides by
(Williams et al., "Roofline", CACM 2009: the memory roof is the bandwidth of the level the working set
streams from). ``last_level_cache`` reads the largest cache level of cpu0 from sysfs
(``/sys/devices/system/cpu/cpu0/cache/index*/{level,size}``); a guest reports what its hypervisor
exposes, which need not be the host's (this bench's machines: 32 MiB on 2026-12-07, 480 MiB in
session 10, docs/dev-notes.md). Without sysfs (not Linux, or no cache entries) the LLC is taken as
``FALLBACK_LLC_BYTES``, 512 MiB, the largest L3 of a current server package (AMD EPYC 9005, 16 CCDs of
32 MiB), so the DRAM set is DRAM-sized on any machine the bench runs on; the report names the source.

``working_sets``: the DRAM set is ``DRAM_LLC_MULTIPLE`` (4) x the LLC, at least ``DRAM_MIN_BYTES``
(1 GiB, so the set stays beyond an LLC the guest under-reports; its peak is about 1.2 GB of RSS in the
parent and ``describe``'s four bandwidth measurements took 11 s at load 17 on this 2-core machine, against
5.5 s for the fixed 384 / 256 MB sets before, in the same minute) and at most a quarter of the memory
available now (``MemAvailable``; the machine is shared); the LLC set a quarter of the LLC (it fits with
room for the code and the other core's traffic). ``eviction_bytes``: a buffer
``EVICTION_LLC_MULTIPLE`` (2) x the LLC, streamed between timed decode steps (``slmc.bench.evict``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")
MEMINFO = Path("/proc/meminfo")
FALLBACK_LLC_BYTES = 512 * 2**20
DRAM_LLC_MULTIPLE = 4
DRAM_MIN_BYTES = 2**30
LLC_SET_FRACTION = 4  # the LLC set is LLC / 4
EVICTION_LLC_MULTIPLE = 2
AVAILABLE_FRACTION = 4  # the DRAM set takes at most MemAvailable / 4


@dataclass(frozen=True)
class LastLevelCache:
    bytes: int
    level: int | None  # None: the fallback
    source: str  # the sysfs entry read, or why the fallback

    def to_json(self) -> dict[str, Any]:
        return {"llc_bytes": self.bytes, "llc_level": self.level, "llc_source": self.source}


def parse_size(text: str) -> int:
    """Bytes of a sysfs cache size (``32768K``, ``1M``, ``512``); ``ValueError`` for anything else."""
    text = text.strip()
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    if text and text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


def last_level_cache(cache_dir: Path = CACHE_DIR) -> LastLevelCache:
    """The largest cache level under ``cache_dir`` (sysfs layout); the largest size among that level's entries.
    Entries that cannot be read or parsed are left out; none left: ``FALLBACK_LLC_BYTES``, saying why."""
    found: list[tuple[int, int, str]] = []
    for entry in sorted(cache_dir.glob("index*")) if cache_dir.is_dir() else []:
        try:
            level, size = int((entry / "level").read_text()), parse_size((entry / "size").read_text())
        except (OSError, ValueError):
            continue
        found.append((level, size, str(entry)))
    if not found:
        return LastLevelCache(FALLBACK_LLC_BYTES, None, f"no readable cache entries under {cache_dir}: assumed "
                                                        f"{FALLBACK_LLC_BYTES // 2**20} MiB (slmc.bench.llc.FALLBACK_LLC_BYTES)")
    level, size, where = max(found)
    return LastLevelCache(size, level, f"{where} (L{level})")


def available_bytes(meminfo: Path = MEMINFO) -> int | None:
    """``MemAvailable`` of ``meminfo`` in bytes; ``None`` when it cannot be read."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass(frozen=True)
class WorkingSets:
    dram_bytes: int  # the whole working set of a DRAM bandwidth measurement
    llc_bytes: int  # ... of an LLC one
    dram_capped: bool  # the memory cap made the DRAM set smaller than DRAM_LLC_MULTIPLE x the LLC

    def to_json(self) -> dict[str, Any]:
        return {"dram_set_bytes": self.dram_bytes, "llc_set_bytes": self.llc_bytes, "dram_set_capped": self.dram_capped}


def working_sets(llc: int, available: int | None) -> WorkingSets:
    """The DRAM and LLC working sets for an LLC of ``llc`` bytes with ``available`` bytes of memory free
    (``None``: unknown, no cap); see the module docstring."""
    wanted = max(DRAM_LLC_MULTIPLE * llc, DRAM_MIN_BYTES)
    dram = wanted if available is None else min(wanted, available // AVAILABLE_FRACTION)
    return WorkingSets(dram, llc // LLC_SET_FRACTION, dram < DRAM_LLC_MULTIPLE * llc)


def eviction_bytes(llc: int) -> int:
    return EVICTION_LLC_MULTIPLE * llc
