import numpy as np
import pytest

from slmc.npu.fixed_point import integer_linear, quantize_multiplier, requantize


def test_multiplier_and_shift_represent_the_real_scale():
    real = np.array([1e-6, 3.7e-4, 0.0123, 0.5, 0.9999999, 1.0, 3.25])
    multiplier, shift = quantize_multiplier(real)
    assert ((multiplier >= 2 ** 30) & (multiplier < 2 ** 31)).all()
    np.testing.assert_allclose(multiplier / 2.0 ** shift, real, rtol=2 ** -30)


def test_negligible_scale_maps_everything_to_zero():
    multiplier, shift = quantize_multiplier(np.array([0.0, 2.0 ** -40]))
    assert list(multiplier) == [0, 0]
    assert list(requantize(np.array([2 ** 30, -(2 ** 30)]), multiplier, shift, "half_up")) == [0, 0]


@pytest.mark.parametrize("rounding,expected", [("half_up", [3, -2, 2, -2, 1]), ("half_away_from_zero", [3, -3, 2, -2, 1])])
def test_rounding_of_ties_and_non_ties(rounding, expected):
    # multiplier 2**30, shift 31: x * 0.5 exactly -> 2.5, -2.5, 2, -2, 0.5 (+ a non-tie)
    acc = np.array([5, -5, 4, -4, 1])
    multiplier, shift = np.full(5, 2 ** 30, np.int32), np.full(5, 31, np.int32)
    assert list(requantize(acc, multiplier, shift, rounding)) == expected


def test_saturates_to_int8():
    multiplier, shift = quantize_multiplier(np.array([1.0, 1.0]))
    assert list(requantize(np.array([1000, -1000]), multiplier, shift, "half_up")) == [127, -128]


def test_unknown_rounding_is_rejected():
    with pytest.raises(ValueError, match="unknown rounding"):
        requantize(np.array([1]), np.array([1]), np.array([1]), "stochastic")


def test_integer_linear_matches_float_arithmetic_within_one_step():
    rng = np.random.default_rng(0)
    codes = rng.integers(-127, 128, (16, 64), dtype=np.int8)
    weights = rng.integers(-127, 128, (32, 64), dtype=np.int8)
    bias = rng.integers(-5000, 5000, 32).astype(np.int32)
    real = rng.uniform(1e-4, 1e-3, 32)
    multiplier, shift = quantize_multiplier(real)
    out = integer_linear(codes, weights, bias, multiplier, shift, "half_up")
    exact = np.clip(np.round((codes.astype(np.float64) @ weights.T.astype(np.float64) + bias) * real), -128, 127)
    assert out.dtype == np.int8 and np.abs(out - exact).max() <= 1
