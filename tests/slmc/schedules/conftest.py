"""Fixtures shared by the schedule tests."""

from __future__ import annotations

import pytest

from slmc.models import tiny_lm

POOL_THREADS = 2  # this machine's cores; the parallel kernel bodies need more than one worker to be exercised


@pytest.fixture(scope="session", autouse=True)
def two_pool_threads() -> int:
    """pytest's main thread keeps TVM's default MaxConcurrency (1 on this 2-core machine, half the hardware threads)
    until some test loads an artifact (``use_physical_cores``), and a parallel kernel then runs inline on one
    thread: the schedule tests ran their parallel bodies on 2 threads only after tests/slmc/artifact. Sized here
    (``set_pool_threads``), the same whichever tests ran before; session-wide, as an artifact's load leaves it."""
    import tvm  # noqa: F401  # loads the runtime library set_pool_threads calls into

    from slmc.artifact.tvm_runtime import set_pool_threads

    set_pool_threads(POOL_THREADS)
    return POOL_THREADS


@pytest.fixture(scope="module")
def tiny():
    """(spec, RelaxProgram) of the two-layer tiny Llama, traced and converted to Relax once per module."""
    from slmc.backend.lowering import to_relax
    from slmc.graph.ir import trace

    spec = tiny_lm.build()
    return spec, to_relax(trace(spec))
