import numpy as np
import pytest

from slmc.artifact.sampling import check_sampling, next_token
from slmc.errors import InputError


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
