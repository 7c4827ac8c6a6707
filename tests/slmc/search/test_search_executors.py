"""Executors: results sorted by id, each reported as it arrives, and a deadline that stops new jobs
(the first job, the search's baseline, always runs)."""

import time

import pytest

from slmc.search.executors import run_local

JOBS = [{"id": "b"}, {"id": "a"}, {"id": "d"}, {"id": "c"}]  # ``dict`` as the trial: a picklable plain-data echo


@pytest.mark.parametrize("workers", [1, 2])
def test_results_sorted_and_each_reported(workers):
    seen = []
    results = run_local(dict, JOBS, workers, on_done=lambda r: seen.append(r["id"]))
    assert [r["id"] for r in results] == ["a", "b", "c", "d"] and sorted(seen) == ["a", "b", "c", "d"]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_spent_deadline_runs_only_the_first_job(workers):
    assert run_local(dict, JOBS, workers, deadline=time.monotonic() - 1) == [{"id": "b"}]
