"""Fixtures shared by the schedule tests."""

from __future__ import annotations

import pytest

from slmc.models import tiny_lm

MIN_POOL_THREADS = 2  # parallel kernel bodies need more than one worker to be exercised


@pytest.fixture(scope="session", autouse=True)
def pool_threads() -> int:
    """The workers of the main thread's TVM pool in the schedule tests: the physical cores (what an artifact's load
    gives, ``use_physical_cores``), at least 2; 0 (left alone) when the user set ``TVM_NUM_THREADS`` /
    ``OMP_NUM_THREADS``. pytest's main thread otherwise keeps TVM's default MaxConcurrency (1 on this 2-core
    machine: half the hardware threads) until some test loads an artifact, and parallel kernels run inline on one
    thread: the schedule tests ran their parallel bodies on 2 threads only after tests/slmc/artifact. Session-wide,
    as an artifact's load leaves it (a started pool cannot grow: the count is the one use_physical_cores takes)."""
    import tvm  # noqa: F401  # loads the runtime library set_pool_threads calls into

    from slmc.artifact.tvm_runtime import default_pool_threads, set_pool_threads, user_chose_threads

    if user_chose_threads():
        return 0  # the user's count
    count = max(MIN_POOL_THREADS, default_pool_threads())  # counted before set_pool_threads pins the thread
    set_pool_threads(count)
    return count


@pytest.fixture(scope="module")
def tiny():
    """(spec, RelaxProgram) of the two-layer tiny Llama, traced and converted to Relax once per module."""
    from slmc.backend.lowering import to_relax
    from slmc.graph.ir import trace

    spec = tiny_lm.build()
    return spec, to_relax(trace(spec))
