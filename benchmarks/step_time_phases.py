"""How one artifact's decode step time moves over a process's life: batches of steps at a sequence of contexts.

Session 14 (docs/dev-notes.md "Session 14: integration") found slmc's step on this VM moving by up to 2x for the
same work, in phases of the host lasting minutes (its DRAM bandwidth), within and between processes. This prints,
per context in ``--contexts`` (each after its prompt, the cache truncated back before each step, as
``slmc bench`` times it), the median of each batch of ``--steps`` steps, and the seconds since the artifact loaded:

    python benchmarks/step_time_phases.py ARTIFACT --contexts 128,128,1024,128,2000,128

``--weights-on-huge-pages`` first moves the mapped weights, in place, onto 2 MB anonymous pages (a copy into an
``MADV_HUGEPAGE`` mapping, then ``mremap`` over the file mapping; the weights are file-mapped on 4 KB pages
otherwise, and ``MADV_COLLAPSE`` refuses a writable private file mapping): session 14 saw no change beyond the
phases. Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time
from pathlib import Path

HUGE_PAGE = 2 << 20
MADV_HUGEPAGE = 14
MREMAP_MAYMOVE_FIXED = 1 | 2
PROT_READ_WRITE = 1 | 2
MAP_PRIVATE_ANONYMOUS = 0x02 | 0x20


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.mmap.restype = libc.mremap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


def _mappings(name: str) -> list[tuple[int, int]]:
    """The address ranges of this process's mappings of the file ``name``."""
    out = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip().endswith("/" + name):
                start, end = line.split()[0].split("-")
                out.append((int(start, 16), int(end, 16)))
    return out


def move_onto_huge_pages(name: str) -> int:
    """Move every mapping of file ``name`` onto 2 MB anonymous pages with the same contents, at the same address;
    returns the bytes moved. Raises ``OSError`` if the kernel refuses."""
    libc, moved = _libc(), 0
    for start, end in _mappings(name):
        size = end - start
        raw = libc.mmap(None, size + HUGE_PAGE, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS, -1, 0)
        if raw in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap of the huge-page copy failed")
        copy = (raw + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
        if libc.madvise(copy, size, MADV_HUGEPAGE) != 0:
            raise OSError(ctypes.get_errno(), "madvise(MADV_HUGEPAGE) failed")
        ctypes.memmove(copy, start, size)
        if libc.mremap(copy, size, size, MREMAP_MAYMOVE_FIXED, start) != start:
            raise OSError(ctypes.get_errno(), "mremap over the weights failed")
        moved += size
    return moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--contexts", default="128,128,1024,128,2000,128")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per batch (after one untimed)")
    parser.add_argument("--weights-on-huge-pages", action="store_true")
    args = parser.parse_args()

    import slmc
    from slmc.artifact.layout import WEIGHTS
    from slmc.bench.timing import bench_prompt

    start = time.perf_counter()
    decoder = slmc.load(args.artifact).decoder()
    if args.weights_on_huge_pages:
        print(f"weights moved onto 2 MB pages: {move_onto_huge_pages(WEIGHTS) / 1e6:.1f} MB")
    one = bench_prompt(1)
    for context in (int(c) for c in args.contexts.split(",")):
        decoder.reset()
        decoder.feed(bench_prompt(context), last_only=True)
        medians = []
        for _ in range(args.batches):
            samples = []
            for _ in range(args.steps + 1):
                decoder.truncate(context)
                begin = time.perf_counter()
                decoder.feed(one, last_only=True)
                samples.append((time.perf_counter() - begin) * 1e3)
            medians.append(statistics.median(samples[1:]))
        print(f"{time.perf_counter() - start:6.1f} s  context {context:5d}: ms per step, batch medians "
              + " ".join(f"{m:.2f}" for m in medians), flush=True)


if __name__ == "__main__":
    main()
