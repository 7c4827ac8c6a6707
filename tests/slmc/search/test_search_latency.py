"""The roofline cost model for targets that do not run here."""

from __future__ import annotations

import pytest

from slmc.errors import InputError
from slmc.search.latency import cost_model_ms
from slmc.spec.target import load_target


def test_memory_bound_decode_on_cortex_a76():
    target = load_target("arm-cortex-a76")  # 17.1 GB/s, 153.6 GFLOP/s float32
    assert cost_model_ms(target, 17_100_000, 1_000) == pytest.approx(1.0)


def test_compute_bound_when_macs_dominate():
    target = load_target("arm-cortex-a76")
    assert cost_model_ms(target, 1, 76_800_000) == pytest.approx(1.0)  # 2 * 76.8e6 / 153.6e9 s


def test_a_target_without_the_numbers_names_the_fields(host_target):
    with pytest.raises(InputError, match="memory.bandwidth_gbps"):
        cost_model_ms(host_target, 1000, 1000)


def test_cost_model_latency_for_a_target_without_numbers_fails_before_any_trial(tmp_path):
    from slmc.search import Budget, search

    with pytest.raises(InputError, match="cost model"):
        search("fixture-lm", "host", Budget(max_ppl_increase=0.05), tmp_path, latency="model")
