"""Cold-cache decode samples (slmc.bench.evict, slmc.bench.timing.step_samples). No timing assertions."""

from __future__ import annotations

import numpy as np
import pytest

from slmc.bench.evict import Evictor
from slmc.bench.timing import step_samples


def test_evict_writes_every_byte_of_its_buffer():
    evictor = Evictor(4096)
    assert np.all(evictor.buffer == 1)  # touched once when made: its pages are resident before any sample
    evictor.evict()
    assert np.all(evictor.buffer == 2)
    with pytest.raises(ValueError, match="at least one byte"):
        Evictor(0)


def test_step_samples_warm_up_once_then_run_before_and_the_eviction_before_each_timed_call():
    calls = []
    samples = step_samples(lambda: calls.append("step"), 3, before=lambda: calls.append("before"))
    assert len(samples) == 3 and calls == ["before", "step"] * 4  # the first pair is the untimed warm-up
    assert len(step_samples(lambda: None, 2, evict_bytes=4096)) == 2
