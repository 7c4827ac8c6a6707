"""The native sampler's greedy choice (slmc/native/runtime/sampler.cpp, argmax.hpp) against numpy's argmax.

The driver (drivers/greedy_sampler.cpp) is compiled with the runtime's flags against sampler.cpp alone (it needs
no TVM): a second or two. Greedy without a repetition penalty must read the logits in place: no allocation per
token (session 12: the copy to doubles and std::max_element's dependency chain cost ~160 us of a 2.5 ms step).
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

SAMPLER_DRIVER = "greedy_sampler"  # compiled by conftest.py's sampler_driver


@pytest.fixture(scope="module")
def driver(sampler_driver) -> Path:
    return sampler_driver


def greedy(driver: Path, rows: list[np.ndarray]) -> list[tuple[int, int, int]]:
    data = b"".join(struct.pack("<q", row.size) + row.astype("<f4").tobytes() for row in rows)
    done = subprocess.run([str(driver)], input=data, capture_output=True, check=True, timeout=60)
    return [tuple(int(v) for v in line.split()) for line in done.stdout.decode().splitlines()]


def edge_rows() -> list[np.ndarray]:
    rng = np.random.default_rng(12)
    rows = []
    for size in (1, 15, 16, 17, 1023, 1024, 1025, 3000, 49152):  # around the lane (16) and block (1,024) sizes
        rows.append(rng.standard_normal(size).astype(np.float32) * 10)
        rows.append(rng.integers(-3, 4, size).astype(np.float32))  # many ties: the first maximum
    row = np.zeros(2048, np.float32)
    row[[5, 1500]] = 7.0  # the maximum in two blocks: the first
    rows.append(row)
    for position in (0, 700, 2047):
        nan = rng.standard_normal(2048).astype(np.float32)
        nan[position] = np.nan  # numpy: the first NaN wins, wherever the maximum is
        rows.append(nan)
    inf = rng.standard_normal(2048).astype(np.float32)
    inf[[100, 900]] = np.inf
    rows.append(inf)
    masked = np.full(2048, -np.inf, np.float32)
    masked[1234] = -5.0  # masked logits: the one number
    rows += [masked, np.full(40, -np.inf, np.float32), np.full(40, np.nan, np.float32)]
    rows.append(np.array([-0.0, 0.0, -0.0], np.float32))  # signed zeros compare equal: index 0
    rows.append(np.full(3000, 3e37, np.float32))  # finite, but the sum overflows: the plain scan
    return rows


def test_greedy_is_numpys_argmax_on_ties_nans_infinities_and_block_edges(driver):
    rows = edge_rows()
    got = greedy(driver, rows)
    want = [int(np.argmax(row)) for row in rows]
    assert [g[0] for g in got] == want
    assert [g[1] for g in got] == want  # the repetition-penalty path (a float copy) chooses the same


def test_greedy_without_repetition_penalty_allocates_nothing(driver):
    rows = [np.random.default_rng(3).standard_normal(49152).astype(np.float32)]  # SmolLM's vocabulary
    assert greedy(driver, rows)[0][2] == 0
