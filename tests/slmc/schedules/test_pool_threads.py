"""The schedule tests' TVM pool (conftest.py ``pool_threads``): parallel kernel bodies run on at least 2 threads even
when these tests run alone, before anything loads an artifact."""

from __future__ import annotations

import ctypes

import pytest


def test_parallel_kernels_of_the_schedule_tests_run_on_the_pool_threads(pool_threads):
    if pool_threads == 0:
        pytest.skip("TVM_NUM_THREADS / OMP_NUM_THREADS set: the user's thread count")
    import tvm  # noqa: F401  # libtvm_runtime.so, loaded RTLD_GLOBAL

    # TVM 0.27's threading::MaxConcurrency: 1 runs every parallel kernel inline on the calling thread
    max_concurrency = getattr(ctypes.CDLL(None), "_ZN3tvm7runtime9threading14MaxConcurrencyEv")
    assert max_concurrency() == pool_threads >= 2
