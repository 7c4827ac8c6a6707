import pytest
import torch
from pass_helpers import compile_fixture, heldout_perplexity, pass_report, run_pass

from slmc.graph.ir import check_graph
from slmc.passes._lowrank_factor import factorize, max_useful_rank, singular_values, whitening_factor
from slmc.passes._rank_allocation import Candidate, global_budget

LINEAR = torch.ops.aten.linear.default


def _linears(graph):
    return [n for n in graph.graph.nodes if n.op == "call_function" and n.target is LINEAR]


def test_full_rank_factors_reproduce_the_weight():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(12, 8, generator=gen, dtype=torch.float64)
    x = torch.randn(100, 8, generator=gen, dtype=torch.float64)
    for whitening in (None, whitening_factor(x.T @ x, 1e-8)):
        a, b = factorize(w, 8, whitening)
        assert a.shape == (12, 8) and b.shape == (8, 8)
        assert torch.allclose(a @ b, w, atol=1e-9)


def test_whitened_truncation_error_is_the_tail_of_the_spectrum():
    """SVD-LLM's identity: ||(W - A B) X^T||_F^2 = sum of the truncated singular values of W L, squared;
    and whitening minimizes that output error, so it beats plain SVD on the calibration inputs."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, 10, generator=gen, dtype=torch.float64)
    x = torch.randn(200, 10, generator=gen, dtype=torch.float64) * torch.logspace(0, 2, 10, dtype=torch.float64)
    whitening = whitening_factor(x.T @ x, 1e-12)
    s = singular_values(w, whitening)
    a, b = factorize(w, 4, whitening)
    error = ((w - a @ b) @ x.T).square().sum()
    assert torch.isclose(error, s[4:].square().sum(), rtol=1e-6)
    pa, pb = factorize(w, 4, None)
    assert error < ((w - pa @ pb) @ x.T).square().sum()


def test_max_useful_rank():
    assert max_useful_rank(256, 256) == 127  # 128 * 512 == 256 * 256 saves nothing
    assert max_useful_rank(640, 256) == 182
    assert max_useful_rank(2, 2) == 0


def test_structure_svd_ratio_on_tiny_lm(tiny_lm_graph, host_target):
    outcome = run_pass("lowrank", tiny_lm_graph, host_target, method="svd", ratio=0.2)
    stats = outcome.stats
    assert stats["layers_factorized"] == 13  # 6 per block + lm_head
    assert stats["share_of_linear_parameters_removed"] >= 0.2
    assert tiny_lm_graph.num_parameters() - outcome.graph.num_parameters() == stats["parameters_removed"]
    tensors = outcome.graph.tensors()
    assert "blocks.0.attn.q_proj.weight" not in tensors
    for name, rank in stats["ranks"].items():
        a, b = tensors[f"{name}.lowrank_out.weight"], tensors[f"{name}.lowrank_in.weight"]
        out_features, in_features = a.shape[0], b.shape[1]
        assert a.shape[1] == b.shape[0] == rank
        assert rank * (out_features + in_features) < out_features * in_features  # fewer params and MACs
    assert len(_linears(outcome.graph)) == 2 * 13
    check_graph(outcome.graph)


def test_include_exclude_and_skips_reported(tiny_lm_graph, host_target):
    outcome = run_pass("lowrank", tiny_lm_graph, host_target, method="svd", ratio=0.1,
                       include=["blocks.*"], exclude=["*.attn.*"])
    assert set(outcome.stats["ranks"]) == {f"blocks.{i}.mlp.{p}" for i in (0, 1) for p in ("up_proj", "down_proj")}
    reasons = {s.node: s.reason for s in outcome.skipped}
    assert len(reasons) == 9 and all("excluded by include/exclude" in r for r in reasons.values())
    assert "lm_head.weight" in outcome.graph.tensors()


def test_energy_skips_layers_that_would_not_shrink(tiny_lm_graph, host_target):
    """Random weights have flat spectra: keeping 99% of the energy needs almost full rank."""
    outcome = run_pass("lowrank", tiny_lm_graph, host_target, method="svd", energy=0.99)
    assert outcome.stats["layers_factorized"] == 0
    assert len(outcome.skipped) == 13
    assert all("only ranks <=" in s.reason for s in outcome.skipped)
    assert outcome.graph.num_parameters() == tiny_lm_graph.num_parameters()


def test_svd_llm_on_the_fixture_beats_plain_svd(fixture_lm_spec, fixture_lm_graph, fixture_calibration, host_target):
    """Held-out perplexity (first 1000 tokens) with 20% of the linear parameters removed, calibrated on
    16 x 128 training tokens. Measured: original 16.39, svd_llm 17.11 (+4.4%), svd 17.25 (+5.2%).
    (On this small, weight-decayed model plain SVD is not far behind at 20%; docs/quality.md has more.)"""
    base = heldout_perplexity(fixture_lm_graph, fixture_lm_spec, 1000)
    found = {}
    for method in ("svd", "svd_llm"):
        outcome = run_pass("lowrank", fixture_lm_graph, host_target, fixture_calibration, method=method, ratio=0.2)
        assert outcome.stats["share_of_linear_parameters_removed"] >= 0.2
        found[method] = heldout_perplexity(outcome.graph, fixture_lm_spec, 1000)
    assert found["svd_llm"] < found["svd"]
    assert found["svd_llm"] <= 1.15 * base


def test_global_allocation_meets_the_budget_and_varies_ranks():
    gen = torch.Generator().manual_seed(0)
    fast = Candidate("fast", 64, 64, torch.logspace(0, -4, 64))
    flat = Candidate("flat", 64, 64, torch.ones(64) + 0.01 * torch.rand(64, generator=gen))
    ranks = global_budget([fast, flat], 2048)
    assert fast.saved(ranks["fast"]) * (ranks["fast"] > 0) + flat.saved(ranks["flat"]) * (ranks["flat"] > 0) >= 2048
    assert ranks["fast"] >= 1 and (ranks["flat"] == 0 or ranks["flat"] > ranks["fast"])
    with pytest.raises(ValueError, match="at most"):
        global_budget([fast, flat], 64 * 64 * 2)


def test_negative_settings():
    from pydantic import ValidationError

    from slmc.spec.pass_registry import get_pass

    config = get_pass("lowrank").config
    with pytest.raises(ValidationError, match="exactly one"):
        config(ratio=0.2, energy=0.9)
    with pytest.raises(ValidationError, match="exactly one"):
        config()
    with pytest.raises(ValidationError):
        config(ratio=1.5)
    assert config(ratio=0.2).needs_calibration() is not None
    assert config(method="svd", ratio=0.2).needs_calibration() is None


def test_negative_svd_llm_without_calibration(tiny_lm_graph, host_target):
    with pytest.raises(ValueError, match="calibration"):
        run_pass("lowrank", tiny_lm_graph, host_target, method="svd_llm", ratio=0.2)


def test_negative_recipe_without_calibration_is_rejected(tmp_path):
    from slmc.errors import RecipeError
    from slmc.spec.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("passes:\n  - lowrank: {method: svd_llm, ratio: 0.2}\n")
    with pytest.raises(RecipeError, match="calibration"):
        load_recipe(path)


@pytest.mark.slow
def test_factorized_fixture_compiles_and_verifies(tmp_path):
    """The factorized graph lowers to TVM, builds, and the artifact matches eager execution."""
    report = pass_report(compile_fixture(tmp_path, "  - lowrank: {method: svd, ratio: 0.2}\n"), "lowrank")
    assert report["after"]["parameters"] < report["before"]["parameters"]
