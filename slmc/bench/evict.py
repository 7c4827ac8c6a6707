"""Cold-cache decode samples (``slmc bench --evict-llc``): evicting the last level cache between timed steps.

Why: on a machine whose LLC holds a small model's weights and KV cache, a decode step reads them from the
LLC, not DRAM, and a step at a longer context may be slower partly because its larger working set no
longer fits, not because of more work (docs/dev-notes.md, session 10: 3.64 -> 5.86 ms from context 128
to 1,024 while attention takes 0.85 ms). Timing the same steps once as usual ("warm": the previous step
left its data in the caches) and once after writing a buffer of ``slmc.bench.llc.eviction_bytes`` (2x the
LLC) before each step ("cold": the step starts with the LLC holding that buffer, so it reads its weights
from DRAM) separates the two: cold - warm is what the caches saved that step.

``Evictor`` runs in the engine's own process, between its steps and outside the timed interval: the
Python engines' timers (``slmc.bench.timing``, the llama.cpp engine through llama-cpp-python's C API in
the same process) call ``evict`` themselves; ``slmc-run`` (its own executable) does the same write in its
token callback with ``--evict-bytes`` (slmc/native/cli/slmc_run.cpp). The write is one thread's (numpy),
so it replaces the shared LLC and that core's private caches; the other core's private L2 (1 MiB here)
may keep lines of the step before. Each byte is incremented, so every cache line is read for ownership and
written (a pure read could be served around a non-inclusive LLC).
"""

from __future__ import annotations

import numpy as np


class Evictor:
    """A buffer of ``nbytes`` (>= 1) allocated and touched once; ``evict`` writes all of it."""

    def __init__(self, nbytes: int):
        if nbytes < 1:
            raise ValueError(f"an eviction buffer needs at least one byte, got {nbytes}")
        self.buffer = np.zeros(nbytes, dtype=np.uint8)
        self.evict()  # its pages made resident now, not inside the first sample's gap

    def evict(self) -> None:
        np.add(self.buffer, 1, out=self.buffer)
