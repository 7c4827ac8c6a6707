"""Fixtures for pass tests: the traced fixture LM (shared: passes work on clones) and calibration
samples from its training text."""

from __future__ import annotations

import pytest
from pass_helpers import calibration_samples


@pytest.fixture(scope="session")
def fixture_lm_spec():
    from slmc.models import fixture_lm

    return fixture_lm()


@pytest.fixture(scope="session")
def fixture_lm_graph(fixture_lm_spec):
    """The traced fixture LM. Shared by tests: run passes on ``graph.clone()`` (``run_pass`` does)."""
    from slmc.graph.ir import check_graph, trace

    graph = trace(fixture_lm_spec)
    check_graph(graph)
    return graph


@pytest.fixture(scope="session")
def fixture_calibration(fixture_lm_spec):
    """16 windows of 128 tokens of the fixture's training text."""
    return calibration_samples(fixture_lm_spec)
