import numpy as np
import pytest

from slmc.artifact.sampling import check_sampling, next_token
from slmc.errors import InputError, ModelError


def test_temperature_zero_is_the_argmax():
    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    assert next_token(logits, 0.0, 1.0, np.random.default_rng(0)) == 1


def test_a_small_nucleus_keeps_only_the_most_likely_token():
    logits = np.array([0.0, 2.0, 1.9, 0.5])
    rng = np.random.default_rng(0)
    assert {next_token(logits, 1.0, 0.01, rng) for _ in range(50)} == {1}


def test_sampling_follows_the_softmax_and_is_seeded():
    logits = np.log(np.array([0.5, 0.3, 0.2]))
    draws = [next_token(logits, 1.0, 1.0, np.random.default_rng(7)) for _ in range(3)]
    assert len(set(draws)) == 1  # the same seed, the same token
    rng = np.random.default_rng(0)
    counts = np.bincount([next_token(logits, 1.0, 1.0, rng) for _ in range(4000)], minlength=3) / 4000
    assert np.allclose(counts, [0.5, 0.3, 0.2], atol=0.03)
    rng = np.random.default_rng(0)  # top_p 0.7: {0, 1} only, renormalized 5:3
    counts = np.bincount([next_token(logits, 1.0, 0.7, rng) for _ in range(4000)], minlength=3) / 4000
    assert counts[2] == 0 and np.allclose(counts[:2], [0.625, 0.375], atol=0.03)


@pytest.mark.parametrize("temperature, top_p, n", [(-0.1, 1.0, 1), (1.0, 0.0, 1), (1.0, 1.5, 1), (0.0, 1.0, 0)])
def test_arguments_out_of_range_are_input_errors(temperature, top_p, n):
    with pytest.raises(InputError):
        check_sampling(temperature, top_p, n)


def former_next_token(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """The session 11 implementation (a stable argsort of the whole vocabulary): the reference."""
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    keep = min(int(np.searchsorted(np.cumsum(probs[order]), top_p)) + 1, probs.size)
    chosen = order[:keep]
    weights = probs[chosen] / probs[chosen].sum()
    return int(chosen[rng.choice(keep, p=weights)])


def sampling_rows() -> list[np.ndarray]:
    rng = np.random.default_rng(12)
    rows = [(rng.standard_normal(size) * scale).astype(np.float32)
            for size in (1, 2, 7, 300, 3000) for scale in (0.5, 3.0, 12.0)]
    rows.append(rng.integers(-3, 4, 3000).astype(np.float32))  # many ties: ids in order within a tie
    rows.append(np.zeros(200, np.float32))  # one tie
    rows.append(np.where(rng.random(2000) < 0.9, -200.0, rng.standard_normal(2000)).astype(np.float32))  # p = 0 tail
    return rows


@pytest.mark.parametrize("first_prefix", [1, 512])  # 1: several growth rounds on small rows
def test_nucleus_draws_equal_the_full_sorts_over_seeds_temperatures_and_top_p(monkeypatch, first_prefix):
    import slmc.artifact.sampling as sampling

    monkeypatch.setattr(sampling, "FIRST_PREFIX", first_prefix)
    seeds = np.random.default_rng(5)
    for row in sampling_rows():
        for temperature in (0.3, 1.0, 2.5):
            for top_p in (1.0, 0.999, 0.9, 0.5, 0.1, 1e-9):
                seed = int(seeds.integers(2**63))
                rng, reference_rng = np.random.default_rng(seed), np.random.default_rng(seed)
                got = [next_token(row, temperature, top_p, rng) for _ in range(4)]
                want = [former_next_token(row, temperature, top_p, reference_rng) for _ in range(4)]
                assert got == want, (row.size, temperature, top_p)


def test_the_nucleus_is_the_full_sorts_prefix_on_a_cumulative_sum_at_top_p():
    import slmc.artifact.sampling as sampling

    probs = np.array([0.25, 0.25, 0.125, 0.125, 0.25])  # cumulative 0.25, 0.5, 0.75, 0.875, 1 by the stable order
    for top_p, want in [(0.5, [0, 1]), (0.75, [0, 1, 4]), (0.76, [0, 1, 4, 2]), (1.0, [0, 1, 4, 2, 3])]:
        assert sampling.nucleus(probs, top_p).tolist() == want


@pytest.mark.filterwarnings("error")  # the former prefix growth divided by a boundary probability of 0
def test_a_top_p_just_below_one_is_exact_and_warning_free_when_the_sum_rounds_below_it():
    # Rows whose sorted cumulative sum ends below 1 (rounding) and whose tail underflows to p = 0: no crossing
    # within any prefix, so the prefix grows past a boundary of probability 0. Same draws as the full sort.
    rng = np.random.default_rng(0)
    top_p = float(np.nextafter(1.0, 0.0))
    rows = []
    while len(rows) < 3:
        row = (rng.standard_normal(1000) * 3).astype(np.float32)
        row[rng.random(1000) < 0.5] = -2000.0  # exp underflows to 0
        scaled = row.astype(np.float64)  # next_token's arithmetic at temperature 1
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        if np.cumsum(np.sort(probs)[::-1])[-1] < top_p:
            rows.append(row)
    for seed, row in enumerate(rows):
        got = [next_token(row, 1.0, top_p, np.random.default_rng(seed)) for _ in range(3)]
        want = [former_next_token(row, 1.0, top_p, np.random.default_rng(seed)) for _ in range(3)]
        assert got == want


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("temperature, top_p", [(0.0, 1.0), (0.05, 1.0), (1.0, 1.0), (1.0, 0.9), (7.0, 1e-6)])
def test_an_infinite_maximum_takes_greedys_first_maximum_under_every_setting(temperature, top_p):
    # The rule shared with the native sampler (test_nucleus_sampler.py): +inf wins, the first of several;
    # a row of -inf only is id 0 (np.argmax).
    rng = np.random.default_rng(1)
    row = rng.standard_normal(300).astype(np.float32)
    row[[40, 7, 250]] = np.inf
    assert {next_token(row, temperature, top_p, rng) for _ in range(5)} == {7}
    row = np.full(300, -np.inf, np.float32)
    assert {next_token(row, temperature, top_p, rng) for _ in range(5)} == {0}


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.5, 0.9)])
def test_a_nan_logit_under_sampling_is_a_model_error_naming_the_token(temperature, top_p):
    row = np.zeros(100, np.float32)
    row[[42, 60]] = np.nan
    row[3] = np.inf  # NaN is checked before the +inf rule
    with pytest.raises(ModelError, match="token 42 is NaN"):
        next_token(row, temperature, top_p, np.random.default_rng(0))
