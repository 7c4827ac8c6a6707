"""The native sampler's temperature / top-k / top-p draws (slmc/native/runtime/sampler.cpp) against the
former implementation, a std::sort of every id, kept as the reference in drivers/nucleus_sampler.cpp.

Session 12: top-p without top-k sorted all 49,152 SmolLM ids per token (4.75 ms CPU); now the logit values
are radix-sorted and the id recovered by one scan. The two must give the identical token for every seed:
the same kept set, the same walk order, the same draw. The driver compiles against sampler.cpp alone (~2 s).
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

SAMPLER_DRIVER = "nucleus_sampler"  # compiled by conftest.py's sampler_driver


@pytest.fixture(scope="module")
def driver(sampler_driver) -> Path:
    return sampler_driver


def case(row: np.ndarray, temperature: float, top_p: float, seed: int, draws: int = 8, top_k: int = 0,
         penalty: float = 1.0) -> bytes:
    return (struct.pack("<qfiffQi", row.size, temperature, top_k, top_p, penalty, seed, draws)
            + row.astype("<f4").tobytes())


def run(driver: Path, cases: list[bytes]) -> list[tuple[list[int], list[int], int]]:
    done = subprocess.run([str(driver)], input=b"".join(cases), capture_output=True, check=True, timeout=120)
    out = []
    for line in done.stdout.decode().splitlines():
        got, want, allocations = line.split("|")
        out.append(([int(t) for t in got.split()], [int(t) for t in want.split()], int(allocations)))
    return out


def test_nucleus_draws_equal_the_full_sorts_over_seeds_temperatures_and_top_p(driver):
    rng = np.random.default_rng(12)
    cases = []
    for size in (1, 2, 17, 1000, 5000):
        for temperature in (0.3, 0.7, 1.0, 1.5):
            for top_p in (1.0, 0.999, 0.95, 0.9, 0.5, 0.1, 1e-6):
                row = (rng.standard_normal(size) * rng.choice([1.0, 4.0, 12.0])).astype(np.float32)
                cases.append(case(row, temperature, top_p, seed=int(rng.integers(2**63)), draws=6))
    results = run(driver, cases)
    assert len(results) == len(cases)
    for got, want, _ in results:
        assert got == want


def test_ties_masked_logits_penalty_and_top_k_choose_as_the_full_sort(driver):
    rng = np.random.default_rng(5)
    rows = [
        rng.integers(-3, 4, 3000).astype(np.float32),  # many ties: walk order by id within a tie
        np.zeros(500, np.float32),  # one tie group
        np.array([-0.0, 0.0, -0.0, 0.0, 1.0], np.float32),  # signed zeros tie
        np.where(rng.random(4000) < 0.9, -np.inf, rng.standard_normal(4000)).astype(np.float32),  # masked tail
        (rng.standard_normal(3000) * 60).astype(np.float32),  # tail far below ulp(total): the early stop
        np.full(64, 3e38, np.float32),  # finite, near float max
    ]
    cases = []
    for row in rows:
        for top_p in (1.0, 0.9, 0.3, 1e-7):
            for temperature in (0.05, 1.0, 7.0):
                seed = int(rng.integers(2**63))
                cases.append(case(row, temperature, top_p, seed))
                cases.append(case(row, temperature, top_p, seed, penalty=1.3))
                cases.append(case(row, temperature, top_p, seed, top_k=row.size))  # top_k >= vocab: no top-k
                cases.append(case(row, temperature, top_p, seed, top_k=max(1, row.size // 3)))
    for got, want, _ in run(driver, cases):
        assert got == want


def test_the_total_adds_every_tail_term_that_rounds_it_up(driver):
    # Two ids of p = 1 and a tail: the total is 2 unless the tail moves it. ulp(2) / 2 = 2^-52 = 2.2e-16, so
    # 3e-16 terms round it up (cumulative 1 / total < 0.5: both heads kept), 1e-16 terms do not (total stays
    # 2, one head reaches top_p = 0.5). A total stopped early on the first row would keep one head.
    cases = []
    for tail in (3e-16, 1e-16):
        row = np.full(2000, np.log(tail), np.float32)
        row[:2] = 0.0
        cases += [case(row, 1.0, 0.5, seed=seed, draws=16) for seed in range(4)]
    results = run(driver, cases)
    for got, want, _ in results:
        assert got == want
    assert {t for got, _, _ in results[:4] for t in got} == {0, 1}
    assert {t for got, _, _ in results[4:] for t in got} == {0}


def test_nucleus_allocates_nothing_per_token_once_grown(driver):
    row = np.random.default_rng(3).standard_normal(49152).astype(np.float32) * 4  # SmolLM's vocabulary
    results = run(driver, [case(row, 0.8, 0.9, seed=1, draws=4), case(row, 0.8, 1.0, seed=2, draws=4),
                           case(row, 0.8, 0.9, seed=3, draws=4, penalty=1.2),
                           case(row, 0.8, 0.9, seed=4, draws=4, top_k=50)])
    for got, want, allocations in results:
        assert got == want
        assert allocations == 0


def test_an_infinite_maximum_takes_greedys_first_maximum_under_every_setting(driver):
    # Session 13's rule, shared with slmc/artifact/sampling.py: softmax has no value at an infinite maximum
    # (inf - inf); the former arithmetic drew the last kept position (the lowest logit without top-k).
    rng = np.random.default_rng(8)
    several = rng.standard_normal(300).astype(np.float32)
    several[[40, 7, 250]] = np.inf
    overflowing = rng.standard_normal(300).astype(np.float32)
    overflowing[[3, 12]] = 3e38  # ids the driver penalizes: 3e38 / 0.5 overflows to +inf in float32
    rows = [(several, 1.0, 7), (np.full(300, -np.inf, np.float32), 1.0, 0), (overflowing, 0.5, 3)]
    cases, want = [], []
    for row, penalty, first in rows:
        for temperature, top_p, top_k in [(0.05, 1.0, 0), (1.0, 0.9, 0), (7.0, 1e-6, 0), (1.0, 1.0, 50),
                                          (1.0, 0.9, 300)]:
            cases.append(case(row, temperature, top_p, seed=int(rng.integers(2**63)), draws=4, top_k=top_k,
                              penalty=penalty))
            want.append([first] * 4)
    assert [got for got, _, _ in run(driver, cases)] == want


@pytest.mark.parametrize("top_k", [0, 50], ids=["nucleus", "top_k"])
def test_a_nan_logit_under_sampling_is_an_error_naming_the_token(driver, top_k):
    row = np.zeros(100, np.float32)
    row[42] = np.nan
    done = subprocess.run([str(driver)], input=case(row, 1.0, 0.9, seed=0, top_k=top_k), capture_output=True, timeout=60)
    assert done.returncode != 0
    assert b"token 42 is NaN" in done.stderr
