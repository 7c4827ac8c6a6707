"""Where trials run: this process, a pool of local processes, or a Ray cluster.

Every executor returns the results sorted by candidate id, and every trial fixes its own torch
thread count and seed (``TrialJob``), so the results do not depend on the executor. Local
workers are started with ``spawn`` (a forked torch process can deadlock in its thread pools).
Ray: ``ray.init(address=...)`` connects to a running cluster (``ray start --head``) and each
trial is one ``@ray.remote`` task reserving one CPU; the workers import slmc from their own
Python environment, which must have the same slmc, torch and TVM.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from slmc.errors import InputError

Trial = Callable[[Any], dict[str, Any]]


def _sorted(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(results, key=lambda r: r["id"])


def run_local(trial: Trial, jobs: Sequence[Any], workers: int) -> list[dict[str, Any]]:
    """``workers`` 1: one after another in this process; more: a spawn-started process pool."""
    if workers <= 1:
        return _sorted([trial(job) for job in jobs])
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return _sorted(list(pool.map(trial, jobs)))


def run_ray(trial: Trial, jobs: Sequence[Any], address: str) -> list[dict[str, Any]]:
    """Each job as a Ray task on the cluster at ``address`` (``HOST:PORT`` of its GCS, or ``auto``)."""
    try:
        import ray
    except ImportError:
        raise InputError("--ray needs the 'ray' package: pip install ray") from None
    try:
        ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise InputError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(trial)
        return _sorted(ray.get([remote.remote(job) for job in jobs]))
    finally:
        ray.shutdown()
