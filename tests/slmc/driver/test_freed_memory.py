"""Memory a compile frees is given back to the operating system (slmc.driver.freed_memory): RSS, not time."""

from __future__ import annotations

import subprocess
import sys

FREE_THEN_TRIM = """
import ctypes
import numpy as np
from slmc.driver.freed_memory import return_freed_memory

def anon():
    return int(next(l for l in open('/proc/self/status') if l.startswith('RssAnon')).split()[1]) // 1024

libc = ctypes.CDLL(None)
libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: where glibc's dynamic threshold ends up after large frees
libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD: nor does it shrink the heap's top by itself
before = anon()
buffers = [np.ones(1 << 20, np.float32) for _ in range(64)]  # 64 x 4 MB, served from the heap
del buffers
freed = anon()
return_freed_memory()
print(before, freed, anon())
"""


def test_weight_sized_buffers_freed_on_the_heap_leave_the_process_after_return_freed_memory():
    done = subprocess.run([sys.executable, "-c", FREE_THEN_TRIM], capture_output=True, text=True, check=True)
    before, freed, trimmed = (int(v) for v in done.stdout.split())
    assert freed - before > 200  # glibc kept the 256 MB it was handed back
    assert trimmed - before < 32, (before, freed, trimmed)
