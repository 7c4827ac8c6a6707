"""The read-only stream of the bandwidth bound (slmc.bench.parallel_read): it reads every byte, on 1 and N threads.

No timing assertions: the figures are only checked to exist and be positive (speed: ``slmc bench``'s report)."""

from __future__ import annotations

import numpy as np
import pytest

from slmc.bench import parallel_read


@pytest.mark.parametrize("slices", [1, 2, 3])
def test_the_kernel_reads_every_word_its_sums_equal_numpys(slices):
    # random words over the whole uint32 range: the wrap-around sums differ from numpy's if any word were skipped
    words = np.random.default_rng(slices).integers(0, 2**32, size=slices * 7 * parallel_read.LANES, dtype=np.uint32)
    got = parallel_read.run_kernel(words, slices)
    assert got.shape == (slices, parallel_read.LANES)
    np.testing.assert_array_equal(got, parallel_read.checksum(words, slices))  # exact: integer sums


def test_one_word_changed_anywhere_changes_the_checksum():
    words = np.zeros(2 * 5 * parallel_read.LANES, dtype=np.uint32)
    words[-1] = 1  # the last word of the second slice
    assert parallel_read.run_kernel(words, 2)[1, -1] == 1 and parallel_read.run_kernel(words, 2).sum() == 1


def test_the_slices_fill_at_most_the_set_asked():
    assert parallel_read.rows_per_slice(2**30, 2) == 2**30 // (2 * 256)  # 256 bytes a row
    assert parallel_read.rows_per_slice(1, 4) == 1


def test_measure_gives_a_figure_per_set_on_one_thread_and_on_the_pool():
    got = parallel_read.measure({"dram": 2**20, "llc": 2**16}, 2, {"dram": 1, "llc": 1})
    assert got["threads"] == 2 and "TVM" in got["method"]
    for name in ("dram", "llc"):
        assert set(got[name]) == {"1", "2"} and all(v > 0 for v in got[name].values())
