import numpy as np
import torch

from slmc.artifact.manifest import Verification
from slmc.graph.ir import ModelSpec, trace
from slmc.graph.kv_cache import Generation
from slmc.spec.recipe import Gates, Verify
from slmc.verify.numerics import (STATIC_ACTIVATION_ATOL, compare_decodes, effective_settings, gate_results, generated_samples,
                                  numeric_comparison, quality_metrics)


def test_numeric_comparison_tolerances():
    ref = [[np.array([1.0, -2.0, 4.0], dtype=np.float32)]]
    act = [[np.array([1.0, -2.0005, 4.002], dtype=np.float32)]]
    loose = numeric_comparison(ref, act, atol=1e-2, rtol=0.0)
    assert loose["within_tolerance"] and abs(loose["max_abs_error"] - 0.002) < 1e-6
    assert abs(loose["max_rel_error"] - 0.002 / 4.0) < 1e-6
    strict = numeric_comparison(ref, act, atol=1e-3, rtol=0.0)
    assert not strict["within_tolerance"] and strict["elements_out_of_tolerance"] == 1
    assert numeric_comparison(ref, act, atol=0.0, rtol=1e-3)["within_tolerance"]


def test_non_finite_and_shape_mismatch_fail():
    ref = [[np.ones(3, dtype=np.float32)]]
    assert not numeric_comparison(ref, [[np.array([1, np.nan, 1], dtype=np.float32)]], 1.0, 1.0)["within_tolerance"]
    mismatch = numeric_comparison(ref, [[np.ones(4, dtype=np.float32)]], 1.0, 1.0)
    assert not mismatch["within_tolerance"] and "shape" in mismatch["error"]


def test_quality_metrics_and_gates():
    original = [[np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]])]]
    compressed = [[np.array([[0.9, 0.1, 0.0], [0.0, 1.0, 2.0]])]]
    m = quality_metrics(original, compressed)
    assert m["top1_agreement"] == 0.5
    assert 0.7 < m["cosine"] < 1.0 and m["max_abs_error"] == 1.0
    results = gate_results(Gates(min_cosine=0.99, min_top1_agreement=0.5), m)
    assert [(r.gate, r.passed) for r in results] == [("min_cosine", False), ("min_top1_agreement", True)]
    assert gate_results(Gates(), m) == []


def test_generated_samples_vary_dynamic_dims_within_bounds(tiny_lm_graph):
    samples = generated_samples(tiny_lm_graph, 4, seed=0)
    lengths = [s[0].shape[1] for s in samples]
    pasts = [s[1].shape[3] for s in samples]
    assert lengths[:2] == [8, 32] and pasts[:2] == [4, 16]  # the example, then 4x the example capped by max
    assert all(1 <= n <= 256 for n in lengths + pasts)
    assert all(s[1].shape == s[2].shape for s in samples)  # keys and values share the 'past' dim
    assert all(int(s[0].min()) >= 0 and int(s[0].max()) < 256 for s in samples)
    assert [s[0].tolist() for s in generated_samples(tiny_lm_graph, 4, seed=0)] == [s[0].tolist() for s in samples]


class _StaticInt8(torch.nn.Module):
    """One linear with static int8 activations (what ``quantize: {scheme: w8a8}`` leaves)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("qweight", torch.ones(4, 8, dtype=torch.int8))
        self.register_buffer("weight_scales", torch.full((4,), 0.01))

    def forward(self, x):
        return torch.ops.slmc.w8a8_linear(x, self.qweight, self.weight_scales, None, None, 0.05)


def test_static_int8_activations_get_their_default_tolerance_unless_the_recipe_sets_one(tiny_lm_graph):
    import slmc.quantization.ops  # noqa: F401 - registers torch.ops.slmc

    static = trace(ModelSpec(_StaticInt8(), (torch.randn(2, 8),)))
    settings, reason = effective_settings(Verify(), static)
    assert settings.atol == STATIC_ACTIVATION_ATOL and "static int8 activations" in reason
    explicit = Verify(atol=0.05)
    assert effective_settings(explicit, static) == (explicit, None)  # the recipe's own value wins
    assert effective_settings(Verify(), tiny_lm_graph) == (Verify(), None)  # float graphs keep 1e-4


# Eager's greedy decode over a 4-token vocabulary: a clear choice, a near tie (2.0 vs 1.95), a clear choice.
EAGER = Generation(tokens=[0, 1, 2], step_logits=[np.array(row, np.float32) for row in
                                                   ([3.0, 1.0, 0.0, 0.0], [0.0, 2.0, 1.95, 0.0], [0.0, 0.0, 5.0, 1.0])])


def _teacher_forced(step_1: list[float]) -> Generation:
    """The artifact's decode on eager's tokens, equal to eager but for step 1's logits."""
    logits = [EAGER.step_logits[0].copy(), np.array(step_1, np.float32), EAGER.step_logits[2].copy()]
    return Generation(tokens=[int(np.argmax(row)) for row in logits], step_logits=logits)


def test_a_greedy_flip_at_a_near_tie_within_the_tolerance_passes_and_is_reported():
    decode = compare_decodes(_teacher_forced([0.0, 1.97, 1.99, 0.0]), EAGER, Verify(atol=0.05, rtol=0.0))
    assert decode.within_tolerance and not decode.same_tokens and decode.near_ties == 1
    (flip,) = decode.flips
    assert (flip.step, flip.eager_token, flip.artifact_token, flip.accepted) == (1, 1, 2, True)
    assert abs(flip.eager_margin - 0.05) < 1e-6 and abs(flip.allowed_margin - 0.1) < 1e-9  # two tolerances of 0.05
    assert "1 within the tolerance (1 near ties)" in Verification(executed=True, passed=True, decode=decode).checks()[0].detail


def test_a_greedy_flip_with_a_clear_margin_fails_naming_the_step_and_the_tokens():
    eager = Generation(tokens=EAGER.tokens, step_logits=[*EAGER.step_logits[:1], np.array([0.0, 2.0, 1.0, 0.0], np.float32),
                                                         EAGER.step_logits[2]])
    decode = compare_decodes(_teacher_forced([0.0, 1.0, 2.0, 0.0]), eager, Verify(atol=0.05, rtol=0.0))
    assert not decode.within_tolerance and decode.near_ties == 0
    (flip,) = decode.flips
    assert (flip.step, flip.eager_token, flip.artifact_token, flip.accepted) == (1, 1, 2, False)
    message = Verification(executed=True, passed=False, decode=decode).failure_message()
    assert "step 1: artifact token 2, eager 1, eager's margin 1 > 0.1 allowed" in message, message


def test_identical_decodes_count_their_near_ties_without_flips():
    decode = compare_decodes(EAGER, EAGER, Verify(atol=0.05, rtol=0.0))
    assert decode.within_tolerance and decode.same_tokens and decode.flips == [] and decode.near_ties == 1
    assert compare_decodes(EAGER, EAGER, Verify(atol=0.01, rtol=0.0)).near_ties == 0  # 0.05 apart > two tolerances of 0.01
