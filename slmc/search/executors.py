"""Where trials run: this process, a pool of local processes, or a Ray cluster.

Every executor returns the results sorted by candidate id, and every trial fixes its own torch
thread count and seed (``TrialJob``), so the results do not depend on the executor. Local
workers are started with ``spawn`` (a forked torch process can deadlock in its thread pools).
Ray: ``ray.init(address=...)`` connects to a running cluster (``ray start --head``) and each
trial is one ``@ray.remote`` task reserving one CPU; the workers import slmc from their own
Python environment, which must have the same slmc, torch and TVM.

A time budget is a ``deadline`` (``time.monotonic()`` seconds): locally, no job starts after it
(jobs running then finish); on Ray, the tasks not finished by then are cancelled. The first job
(the search's baseline) always runs to its end. ``on_done`` is called with each result as it
arrives (the search's progress).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from slmc.errors import InputError

Trial = Callable[[Any], dict[str, Any]]
Done = Callable[[dict[str, Any]], None]


def _ignore(result: dict[str, Any]) -> None:
    """The default ``on_done``: no progress to show."""


def _in_time(deadline: float | None) -> bool:
    return deadline is None or time.monotonic() < deadline


def _sorted(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(results, key=lambda r: r["id"])


def run_local(trial: Trial, jobs: Sequence[Any], workers: int, deadline: float | None = None,
              on_done: Done = _ignore) -> list[dict[str, Any]]:
    """``workers`` 1: one after another in this process; more: a spawn-started process pool. Jobs not
    started by ``deadline`` are left out of the results."""
    results: list[dict[str, Any]] = []
    if workers <= 1:
        for index, job in enumerate(jobs):
            if index and not _in_time(deadline):
                break
            results.append(trial(job))
            on_done(results[-1])
        return _sorted(results)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        waiting = list(jobs)
        running: set[Future[dict[str, Any]]] = set()
        while waiting or running:
            while waiting and len(running) < workers and (len(waiting) == len(jobs) or _in_time(deadline)):
                running.add(pool.submit(trial, waiting.pop(0)))
            if not running:
                break
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                results.append(future.result())
                on_done(results[-1])
            if not _in_time(deadline):
                waiting.clear()
    return _sorted(results)


def run_ray(trial: Trial, jobs: Sequence[Any], address: str, deadline: float | None = None,
            on_done: Done = _ignore) -> list[dict[str, Any]]:
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
        first, *rest = [remote.remote(job) for job in jobs]
        results = [ray.get(first)]
        on_done(results[-1])
        while rest:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            finished, rest = ray.wait(rest, num_returns=1, timeout=left)
            if not finished:
                for ref in rest:
                    ray.cancel(ref)
                break
            results.append(ray.get(finished[0]))
            on_done(results[-1])
        return _sorted(results)
    finally:
        ray.shutdown()
