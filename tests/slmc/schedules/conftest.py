"""Fixtures shared by the schedule tests."""

from __future__ import annotations

import pytest

from slmc.models import tiny_lm


@pytest.fixture(scope="module")
def tiny():
    """(spec, RelaxProgram) of the two-layer tiny Llama, traced and converted to Relax once per module."""
    from slmc.backend.lowering import to_relax
    from slmc.graph.ir import trace

    spec = tiny_lm.build()
    return spec, to_relax(trace(spec))
