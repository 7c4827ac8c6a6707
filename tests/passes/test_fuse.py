import pytest
import torch
from torch import nn

from slmc.graph.ir import ModelSpec, check_graph, fetch_attr, trace
from slmc.models import tiny_lm

from pass_helpers import compile_fixture, lm_samples, relative_error, run_pass

# fuse is exact up to float rounding: largest |after - before| / max|before| over all outputs.
# Measured: fixture-lm 1.4e-6 (norm scales of a trained model folded into the weights),
# tiny-lm with random norm scales 2.9e-7, conv/linear + BatchNorm 8.9e-8, LayerNorm + linears 1.5e-7.
EXACT = 1e-5

aten = torch.ops.aten


def _ops(graph, op):
    return [n for n in graph.graph.nodes if n.op == "call_function" and n.target is op]


@pytest.fixture()
def scaled_tiny_lm():
    """tiny-lm with random (non-unit) RMSNorm scales, so folding them is a real change."""
    spec = tiny_lm.build()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in spec.module.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
    return spec, trace(spec)


def test_structure_tiny_lm_qkv_merged_and_norms_folded(scaled_tiny_lm, host_target):
    spec, graph = scaled_tiny_lm
    outcome = run_pass("fuse", graph, host_target, merge_siblings=True)
    assert outcome.stats["norm_scales_folded"] == 5  # 2 per block + the final norm
    assert outcome.stats["sibling_groups_merged"] == 2 and outcome.stats["linears_merged"] == 6  # q, k, v per block
    tensors = outcome.graph.tensors()
    assert not any(name.endswith("norm.weight") for name in tensors)
    assert tuple(tensors["blocks.0.attn.q_proj_k_proj_v_proj.weight"].shape) == (384, 128)
    assert len(_ops(outcome.graph, aten.linear.default)) == 2 * 4 + 1
    splits = _ops(outcome.graph, aten.split_with_sizes.default)
    assert [s.args[1] for s in splits] == [[128, 128, 128]] * 2
    assert outcome.graph.num_parameters() == graph.num_parameters() - 5 * 128
    assert outcome.skipped == []
    check_graph(outcome.graph)


def test_numerics_tiny_lm(scaled_tiny_lm, host_target):
    spec, graph = scaled_tiny_lm
    outcome = run_pass("fuse", graph, host_target, merge_siblings=True)
    assert relative_error(graph, outcome.graph, lm_samples(spec)) <= EXACT


def test_structure_and_numerics_fixture_lm(fixture_lm_spec, fixture_lm_graph, host_target):
    outcome = run_pass("fuse", fixture_lm_graph, host_target, merge_siblings=True)
    stats = outcome.stats
    assert stats["norm_scales_folded"] == 9  # 2 per layer + the final norm (read through an alias)
    assert stats["sibling_groups_merged"] == 8 and stats["linears_merged"] == 20  # q/k/v and gate/up per layer
    assert stats["constants_folded"] == 1  # the rotary inv_freq device/dtype conversion
    tensors = outcome.graph.tensors()
    assert tuple(tensors["model.model.layers.0.self_attn.q_proj_k_proj_v_proj.weight"].shape) == (512, 256)
    assert tuple(tensors["model.model.layers.3.mlp.gate_proj_up_proj.weight"].shape) == (1280, 256)
    assert len(_ops(outcome.graph, aten.linear.default)) == 4 * 4 + 1
    assert outcome.skipped == []
    assert relative_error(fixture_lm_graph, outcome.graph, lm_samples(fixture_lm_spec)) <= EXACT


def test_switches_turn_steps_off(scaled_tiny_lm, host_target):
    _, graph = scaled_tiny_lm
    outcome = run_pass("fuse", graph, host_target, fold_norms=False)  # merging is off by default
    assert "sibling_groups_merged" not in outcome.stats and "norm_scales_folded" not in outcome.stats
    assert _ops(outcome.graph, aten.split_with_sizes.default) == []
    assert len(_ops(outcome.graph, aten.linear.default)) == len(_ops(graph, aten.linear.default))


class ConvBN(nn.Module):
    """conv -> BatchNorm2d (conv without bias), pooled, linear -> BatchNorm1d."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 6)
        self.bn1 = nn.BatchNorm1d(6)
        gen = torch.Generator().manual_seed(0)
        for bn in (self.bn, self.bn1):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen))
            bn.running_var.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
            bn.weight.data.copy_(torch.randn(bn.num_features, generator=gen))
            bn.bias.data.copy_(torch.randn(bn.num_features, generator=gen))

    def forward(self, x):
        return self.bn1(self.fc(self.bn(self.conv(x)).mean((2, 3))))


def test_batch_norm_folded_into_conv_and_linear(host_target):
    graph = trace(ModelSpec(ConvBN().eval(), (torch.randn(2, 3, 8, 8),), name="convbn"))
    outcome = run_pass("fuse", graph, host_target)
    assert outcome.stats["batch_norms_folded"] == 2
    assert _ops(outcome.graph, aten.batch_norm.default) == []
    (conv,) = _ops(outcome.graph, aten.conv2d.default)
    assert conv.args[2] is not None  # a bias was created for the bias-free conv
    x = torch.randn(2, 3, 8, 8)
    (before,), (after,) = graph.run(x), outcome.graph.run(x)
    assert (before - after).abs().max().item() <= EXACT * before.abs().max().item()


class LayerNormLinears(nn.Module):
    """LayerNorm feeding two linears (one without bias): scale and shift fold into both."""

    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(16)
        self.a = nn.Linear(16, 8)
        self.b = nn.Linear(16, 4, bias=False)
        gen = torch.Generator().manual_seed(0)
        self.ln.weight.data.copy_(torch.randn(16, generator=gen))
        self.ln.bias.data.copy_(torch.randn(16, generator=gen))

    def forward(self, x):
        h = self.ln(x)
        return self.a(h), self.b(h)


def test_layer_norm_affine_folded_into_linears(host_target):
    graph = trace(ModelSpec(LayerNormLinears().eval(), (torch.randn(3, 5, 16),), name="ln"))
    outcome = run_pass("fuse", graph, host_target, merge_siblings=False)
    assert outcome.stats["norm_scales_folded"] == 1
    (ln,) = _ops(outcome.graph, aten.layer_norm.default)
    assert ln.args[2] is None and ln.args[3] is None
    assert all(len(n.args) == 3 and n.args[2] is not None for n in _ops(outcome.graph, aten.linear.default))
    x = torch.randn(3, 5, 16)
    for before, after in zip(graph.run(x), outcome.graph.run(x)):
        assert (before - after).abs().max().item() <= EXACT * before.abs().max().item()
    merged = run_pass("fuse", graph, host_target, merge_siblings=True)  # now both have a bias: they merge too
    assert merged.stats["sibling_groups_merged"] == 1
    for before, after in zip(graph.run(x), merged.graph.run(x)):
        assert (before - after).abs().max().item() <= EXACT * before.abs().max().item()


class NormFeedsResidual(nn.Module):
    """The scaled tensor is also added to the residual: the scale cannot move into the linear."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.rand(16) + 0.5)
        self.fc = nn.Linear(16, 16, bias=False)

    def forward(self, x):
        h = self.scale * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
        return h + self.fc(h)


def test_negative_scale_with_other_users_is_skipped(host_target):
    graph = trace(ModelSpec(NormFeedsResidual().eval(), (torch.randn(2, 16),), name="residual"))
    outcome = run_pass("fuse", graph, host_target)
    assert outcome.stats["norm_scales_folded"] == 0
    (skip,) = outcome.skipped
    assert "not only the input of linear layers" in skip.reason and "add" in skip.reason
    assert outcome.graph.tensors()["scale"].shape == (16,)


class MixedSiblings(nn.Module):
    """Three linears on one input: two float32 without bias merge; the one with a bias stays apart."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 4, bias=False)
        self.b = nn.Linear(8, 5, bias=False)
        self.c = nn.Linear(8, 6, bias=True)

    def forward(self, x):
        return self.a(x), self.b(x), self.c(x)


def test_negative_siblings_that_differ_are_not_merged(host_target):
    graph = trace(ModelSpec(MixedSiblings().eval(), (torch.randn(2, 8),), name="mixed"))
    outcome = run_pass("fuse", graph, host_target, merge_siblings=True)
    assert outcome.stats["sibling_groups_merged"] == 1 and outcome.stats["linears_merged"] == 2
    assert [s.args[1] for s in _ops(outcome.graph, aten.split_with_sizes.default)] == [[4, 5]]
    assert any("differ" in s.reason for s in outcome.skipped)
    x = torch.randn(2, 8)
    for before, after in zip(graph.run(x), outcome.graph.run(x)):
        assert torch.equal(before, after) or (before - after).abs().max().item() <= EXACT * before.abs().max().item()


class TiedSiblings(nn.Module):
    """Two linears reading one shared weight: neither may be rewritten."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 8))
        self.scale = nn.Parameter(torch.rand(8) + 0.5)

    def forward(self, x):
        h = x * self.scale
        return torch.nn.functional.linear(h, self.w), torch.nn.functional.linear(h, self.w)


def test_negative_shared_weights_are_left_alone(host_target):
    graph = trace(ModelSpec(TiedSiblings().eval(), (torch.randn(2, 8),), name="tied"))
    outcome = run_pass("fuse", graph, host_target, merge_siblings=True)
    assert outcome.stats["norm_scales_folded"] == 0 and outcome.stats["sibling_groups_merged"] == 0
    reasons = " ".join(s.reason for s in outcome.skipped)
    assert "shares its weights" in reasons and "shared with other nodes" in reasons


class BNWithTwoReaders(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_negative_batch_norm_after_shared_conv_is_skipped(host_target):
    graph = trace(ModelSpec(BNWithTwoReaders().eval(), (torch.randn(1, 3, 4, 4),), name="bn2"))
    outcome = run_pass("fuse", graph, host_target)
    assert outcome.stats["batch_norms_folded"] == 0
    assert any("other users besides the BatchNorm" in s.reason for s in outcome.skipped)


def test_quantized_siblings_merge_exactly(host_target):
    """quantize, then fuse: the int4 Q/K/V of each block (same bits, group size, input width) become one
    quantized_linear whose stored rows are the three stacked; the outputs are bit for bit the same."""
    spec = tiny_lm.build()
    quantized = run_pass("quantize", trace(spec), host_target, bits=4, group_size=32).graph
    outcome = run_pass("fuse", quantized, host_target, merge_siblings=True)
    op = torch.ops.slmc.quantized_linear.default
    assert outcome.stats["sibling_groups_merged"] == 2 and outcome.stats["linears_merged"] == 6
    assert (len(_ops(quantized, op)), len(_ops(outcome.graph, op))) == (13, 9)
    tensors = outcome.graph.tensors()
    merged = [n for n in _ops(outcome.graph, op) if tensors[n.args[1].target].shape[0] == 384]
    assert len(merged) == 2 and all(n.args[6:] == (4, 32) for n in merged)
    check_graph(outcome.graph)
    for sample in lm_samples(spec):
        assert all(torch.equal(a, b) for a, b in zip(quantized.run(*sample), outcome.graph.run(*sample)))


@pytest.mark.parametrize("codes", [{}, {"scale_codes": True, "activation_group_size": 32, "scale_code_bits": 6}],
                         ids=["float16-scales", "6-bit-scale-codes"])
def test_w4a8_siblings_merge_and_share_their_activation_codes(host_target, codes):
    """quantize w4a8, then fuse: Q/K/V read one input, so its per-token codes are the same for all three and the
    merged op's outputs are the three ops' outputs (equal up to float32 rounding of the larger matmul). With scale
    codes the packed codes and the row scales (the op's last argument, multiplied in its kernel) stack by rows."""
    spec = tiny_lm.build()
    quantized = run_pass("quantize", trace(spec), host_target, scheme="w4a8", group_size=32, **codes).graph
    outcome = run_pass("fuse", quantized, host_target, merge_siblings=True)
    op = torch.ops.slmc.w4a8_linear.default
    assert outcome.stats["sibling_groups_merged"] == 2 and (len(_ops(quantized, op)), len(_ops(outcome.graph, op))) == (13, 9)
    if codes:  # every op multiplies its own rows' scales: [N] float16, N its output features
        for node in _ops(outcome.graph, op):
            rows = fetch_attr(outcome.graph.module, str(node.args[7].target))
            assert rows.dtype == torch.float16 and rows.shape == (fetch_attr(outcome.graph.module, str(node.args[1].target)).shape[0],)
    check_graph(outcome.graph)
    assert relative_error(quantized, outcome.graph, lm_samples(spec)) <= EXACT


def test_negative_settings_rejected():
    from pydantic import ValidationError

    from slmc.spec.pass_registry import get_pass

    with pytest.raises(ValidationError):
        get_pass("fuse").config(max_growth_bytes=-1)
    with pytest.raises(ValidationError):
        get_pass("fuse").config(merge_qkv=True)


@pytest.mark.slow
def test_fused_fixture_compiles_and_verifies(tmp_path):
    """fuse on the fixture lowers to TVM, builds and matches eager (measured max abs error 2.1e-5)."""
    compile_fixture(tmp_path, "  - fuse: {merge_siblings: true}\n")


@pytest.mark.slow
def test_merged_quantized_siblings_compile_and_verify(tmp_path):
    """int4 quantize, then fuse with merging: the stacked quantized Q/K/V lower to TVM and match eager
    (tiny-lm; measured max abs error 8.3e-7)."""
    import slmc

    recipe = tmp_path / "qf.yaml"
    recipe.write_text("passes:\n  - quantize: {bits: 4, group_size: 32}\n  - fuse: {merge_siblings: true}\n"
                      "verify: {num_samples: 2, atol: 1.0e-4}\n")
    result = slmc.compile("tiny-lm", str(recipe), "host", tmp_path / "out")
    assert result.manifest.passes[1].stats["linears_merged"] == 6
    assert result.manifest.verification.passed
