import numpy as np
import pytest
import torch
from pass_helpers import calibration_samples, compile_fixture, heldout_perplexity, run_pass
from torch import nn

from slmc.graph.ir import ModelSpec, check_graph, trace
from slmc.passes._channel_groups import channel_groups


class GatedMLP(nn.Module):
    """x -> down(silu(gate x) * up x) + res(x): one coupled group (gate, up -> down); res writes elsewhere."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.gate = nn.Linear(8, 16, bias=False)
        self.up = nn.Linear(8, 16, bias=True)
        self.down = nn.Linear(16, 8, bias=False)
        self.res = nn.Linear(8, 8)

    def forward(self, x):
        return self.down(nn.functional.silu(self.gate(x)) * self.up(x)) + self.res(x)


@pytest.fixture()
def mlp():
    gen = torch.Generator().manual_seed(1)
    samples = [(torch.randn(4, 8, generator=gen),) for _ in range(8)]
    return trace(ModelSpec(GatedMLP().eval(), (torch.randn(4, 8),), name="mlp")), samples


def test_groups_of_the_models():
    from slmc.models import tiny_lm

    groups = channel_groups(trace(tiny_lm.build()))
    assert [([p.name for p in g.producers], [c.name for c in g.consumers], g.channels) for g in groups] == [
        (["blocks.0.mlp.up_proj"], ["blocks.0.mlp.down_proj"], 512),
        (["blocks.1.mlp.up_proj"], ["blocks.1.mlp.down_proj"], 512),
    ]  # attention projections (reshaped into heads) and residual writers are not groups


def test_fixture_groups(fixture_lm_graph):
    groups = channel_groups(fixture_lm_graph)
    assert len(groups) == 4
    assert all([p.name.rsplit(".", 1)[1] for p in g.producers] == ["gate_proj", "up_proj"] for g in groups)
    assert all(g.channels == 640 for g in groups)


def test_removed_channels_are_replaced_by_their_mean(mlp, host_target):
    """FLAP's compensation: the pruned model computes down(h_kept) + down[:, removed] @ mean(h_removed)."""
    graph, samples = mlp
    outcome = run_pass("prune_channels", graph, host_target, samples, mlp_channels=0.5, multiple_of=1)
    assert outcome.stats["channels_kept"] == {"down": "8/16"}
    tensors = outcome.graph.tensors()
    assert tensors["gate.weight"].shape == (8, 8) and tensors["up.bias"].shape == (8,) and tensors["down.weight"].shape == (8, 8)
    assert outcome.stats["parameters_removed"] == 3 * 8 * 8
    module = graph.module
    hidden = [nn.functional.silu(s[0] @ module.gate.weight.T) * (s[0] @ module.up.weight.T + module.up.bias) for s in samples]
    mean = torch.cat(hidden).mean(0)
    kept = torch.tensor([any(torch.equal(row, new) for new in tensors["gate.weight"]) for row in module.gate.weight])
    assert int(kept.sum()) == 8
    for sample, h in zip(samples, hidden):
        expected = torch.where(kept, h, mean) @ module.down.weight.T + sample[0] @ module.res.weight.T + module.res.bias
        (actual,) = outcome.graph.run(*sample)
        assert torch.allclose(actual, expected, atol=1e-5)
    check_graph(outcome.graph)


def test_tiny_lm_shrinks_and_keeps_its_signature(tiny_lm_graph, host_target, lm_inputs):
    from slmc.models import tiny_lm

    calibration = calibration_samples(tiny_lm.build(), num_samples=4, sequence_length=64)
    outcome = run_pass("prune_channels", tiny_lm_graph, host_target, calibration)
    assert outcome.stats["groups_pruned"] == 2 and outcome.stats["heads_pruned"] == 0
    assert outcome.graph.tensors()["blocks.0.mlp.up_proj.weight"].shape == (384, 128)
    assert tiny_lm_graph.num_parameters() - outcome.graph.num_parameters() == outcome.stats["parameters_removed"] - 2 * 128
    x = lm_inputs(9, past=3)
    assert [t.shape for t in outcome.graph.run(*x)] == [t.shape for t in tiny_lm_graph.run(*x)]


def test_negative_exclusions_and_missing_calibration(mlp, host_target):
    graph, samples = mlp
    outcome = run_pass("prune_channels", graph, host_target, samples, exclude=["down"])
    assert outcome.stats["groups_pruned"] == 0
    assert "excluded" in outcome.skipped[0].reason
    with pytest.raises(ValueError, match="calibration"):
        run_pass("prune_channels", graph, host_target)
    from pydantic import ValidationError

    from slmc.spec.pass_registry import get_pass

    with pytest.raises(ValidationError):
        get_pass("prune_channels").config(mlp_channels=1.0)


@pytest.mark.slow
def test_fixture_quality_and_compile(fixture_lm_spec, fixture_lm_graph, host_target, tmp_path):
    """25% of MLP channels removed: held-out perplexity (first 3000 tokens) within +60%; with 25% of
    the heads removed as well, the artifact builds, verifies (KV cache of 3 heads) and runs. Measured (32 x 128 calibration tokens): 10.00 -> 11.20 (+12.0%)."""
    import slmc

    calibration = calibration_samples(fixture_lm_spec, num_samples=32, sequence_length=128)
    outcome = run_pass("prune_channels", fixture_lm_graph, host_target, calibration, mlp_channels=0.25)
    assert outcome.stats["channels_kept"]["model.model.layers.0.mlp.down_proj"] == "480/640"
    base = heldout_perplexity(fixture_lm_graph, fixture_lm_spec, 3000)
    assert heldout_perplexity(outcome.graph, fixture_lm_spec, 3000) <= 1.6 * base
    result = compile_fixture(tmp_path, "  - prune_channels: {mlp_channels: 0.25, heads: 0.25}\n",
                             "calibration: {text: stdlib-train, num_samples: 8, sequence_length: 128}\n")
    manifest = result.manifest  # heads too: the artifact's KV cache has 3 of the 4 KV heads
    assert manifest.verification.decode.within_tolerance
    assert manifest.kv_cache.kv_heads == 3
    assert [i.shape[2] for i in manifest.signature.inputs[1:]] == [3, 3]
    removed = 4 * (3 * 160 * 256 + 4 * 32 * 256 + 2 * 32 * 256)  # per layer: 160 MLP channels, 2 query + 1 KV head
    added = 8 * 256 - 16  # compensation biases of down_proj and o_proj, less the unused rotary buffer dropped
    assert manifest.model.compiled_parameters == manifest.model.parameters - removed + added
    model = slmc.load(tmp_path / "out")
    assert model.step(np.asarray([[5, 6, 7]]), *model.kv_cache.empty())[1].shape == (4, 1, 3, 4, 32)
