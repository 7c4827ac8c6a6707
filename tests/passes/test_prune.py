import pytest
import torch
from pass_helpers import calibration_samples, compile_fixture, heldout_perplexity, pass_report, run_pass

from slmc.graph.ir import check_graph
from slmc.passes._sparsegpt import sparsegpt_prune

BLOCK_LINEARS = [f"blocks.{i}.{p}" for i in (0, 1) for p in
                 ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.up_proj", "mlp.down_proj")]


@pytest.fixture(scope="module")
def tiny_calibration():
    from slmc.models import tiny_lm

    return calibration_samples(tiny_lm.build(), num_samples=4, sequence_length=64)


@pytest.fixture()
def two_of_four_target(tmp_path, host_target):
    """A descriptor whose runtime claims 2:4 support (host's own lists none: TVM has no sparse kernels)."""
    from importlib import resources

    from slmc.spec.target import load_target

    host = (resources.files("slmc.targets") / "host.yaml").read_text()
    text = host.replace("name: host", "name: host-2of4").replace("patterns: []", "patterns: ['2:4', '4:8']")
    path = tmp_path / "host-2of4.yaml"
    path.write_text(text)
    return load_target(path)


def test_magnitude_structure_on_tiny_lm(tiny_lm_graph, host_target):
    outcome = run_pass("prune", tiny_lm_graph, host_target, method="magnitude", sparsity=0.5)
    assert outcome.stats["layers_pruned"] == 12
    assert set(outcome.stats["layer_sparsity"]) == set(BLOCK_LINEARS)
    assert all(s == 0.5 for s in outcome.stats["layer_sparsity"].values())
    assert [s.reason for s in outcome.skipped] == ["lm_head: excluded by include/exclude patterns"]
    before, after = tiny_lm_graph.tensors(), outcome.graph.tensors()
    assert torch.equal(before["lm_head.weight"], after["lm_head.weight"])
    w, p = before["blocks.0.mlp.up_proj.weight"], after["blocks.0.mlp.up_proj.weight"]
    pruned = p == 0
    assert w[pruned].abs().max() <= w[~pruned].abs().min()  # the smallest magnitudes of the layer went
    assert torch.equal(p[~pruned], w[~pruned])  # the rest is untouched
    assert outcome.graph.num_parameters() == tiny_lm_graph.num_parameters()  # stored densely
    assert "buys no size or speed" in outcome.stats["storage"]
    check_graph(outcome.graph)


def test_overrides_set_sparsity_per_layer(tiny_lm_graph, host_target):
    outcome = run_pass("prune", tiny_lm_graph, host_target, method="magnitude", sparsity=0.5,
                       overrides=[{"match": "*down_proj", "sparsity": 0.25},
                                  {"match": "blocks.1.mlp.down_proj", "sparsity": 0.0}])
    sparsity = outcome.stats["layer_sparsity"]
    assert sparsity["blocks.0.mlp.down_proj"] == 0.25 and sparsity["blocks.0.mlp.up_proj"] == 0.5
    assert "blocks.1.mlp.down_proj" not in sparsity
    assert any("sparsity 0 by overrides" in s.reason for s in outcome.skipped)


def test_wanda_prunes_each_row_by_weight_times_input_norm(tiny_lm_graph, host_target, tiny_calibration):
    from slmc.graph.activations import linear_input_statistics
    from slmc.graph.linears import linear_layers

    outcome = run_pass("prune", tiny_lm_graph, host_target, tiny_calibration, method="wanda", sparsity=0.5, sequential=False)
    layers, _ = linear_layers(tiny_lm_graph)
    q = next(layer for layer in layers if layer.name == "blocks.0.attn.q_proj")
    norm = linear_input_statistics(tiny_lm_graph, tiny_calibration, [q.node.name], hessian=False)[q.node.name].channel_norm
    w = q.weight(tiny_lm_graph)
    p = outcome.graph.tensors()["blocks.0.attn.q_proj.weight"]
    score = w.abs().double() * norm
    pruned = p == 0
    assert torch.all(pruned.sum(1) == 64)  # exactly half of every output row
    for row in range(w.shape[0]):
        assert score[row][pruned[row]].max() <= score[row][~pruned[row]].min()


def test_sparsegpt_reconstructs_better_than_masking():
    """On correlated inputs, OBS updates leave a smaller output error than Wanda's mask alone, at equal sparsity.
    Measured: sparsegpt 0.146, wanda 0.265 (relative output error)."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(32, 64, generator=gen)
    x = torch.randn(512, 16, generator=gen) @ torch.randn(16, 64, generator=gen) + 0.1 * torch.randn(512, 64, generator=gen)
    h = x.T.double() @ x.double()
    p = sparsegpt_prune(w, h, 0.5, None, block_size=16)
    assert (p == 0).sum().item() == 32 * 64 // 2
    from slmc.passes._pruning_masks import unstructured_mask, wanda_scores

    m = w.masked_fill(unstructured_mask(wanda_scores(w, x.norm(dim=0)), 0.5, per_row=True), 0.0)
    error = lambda q: ((w - q) @ x.T).norm() / (w @ x.T).norm()  # noqa: E731
    assert error(p) < 0.75 * error(m)
    nm = sparsegpt_prune(w, h, 0.0, (2, 4), block_size=16)
    assert torch.all((nm.reshape(32, 16, 4) == 0).sum(-1) >= 2)


def test_two_of_four_needs_a_target_that_lists_it(tiny_lm_graph, host_target, two_of_four_target):
    from slmc.spec.pass_registry import get_pass

    config = get_pass("prune").config(method="magnitude", pattern="2:4")
    (field, message), = config.target_problems(host_target)
    assert field == "pattern" and "'2:4'" in message and "none" in message
    assert config.target_problems(two_of_four_target) == []
    outcome = run_pass("prune", tiny_lm_graph, two_of_four_target, method="magnitude", pattern="2:4")
    w = outcome.graph.tensors()["blocks.0.mlp.down_proj.weight"]
    assert torch.all((w.reshape(w.shape[0], -1, 4) == 0).sum(-1) == 2)
    assert "lists '2:4', but slmc's TVM lowering has no sparse" in outcome.stats["storage"]


def test_four_of_eight_with_wanda(tiny_lm_graph, two_of_four_target, tiny_calibration):
    outcome = run_pass("prune", tiny_lm_graph, two_of_four_target, tiny_calibration, method="wanda", pattern="4:8")
    for name in BLOCK_LINEARS:
        w = outcome.graph.tensors()[f"{name}.weight"]
        assert torch.all((w.reshape(w.shape[0], -1, 8) == 0).sum(-1) == 4)


def test_negative_recipe_with_two_of_four_for_host_exits_2(tmp_path):
    from click.testing import CliRunner

    from slmc.cli.main import cli

    recipe = tmp_path / "r.yaml"
    recipe.write_text("passes:\n  - prune: {method: magnitude, pattern: '2:4'}\n")
    result = CliRunner().invoke(cli, ["recipe", "check", str(recipe), "-t", "host"])
    assert result.exit_code == 2
    assert "passes.0.prune.pattern" in result.output and "target 'host'" in result.output


def test_negative_settings():
    from pydantic import ValidationError

    from slmc.spec.pass_registry import get_pass

    config = get_pass("prune").config
    with pytest.raises(ValidationError, match="fixes the sparsity"):
        config(pattern="2:4", sparsity=0.6)
    with pytest.raises(ValidationError):
        config(sparsity=1.0)
    with pytest.raises(ValidationError):
        config(method="random")
    assert config().needs_calibration() is not None
    assert config(method="magnitude").needs_calibration() is None


def test_negative_wanda_without_calibration(tiny_lm_graph, host_target):
    with pytest.raises(ValueError, match="calibration"):
        run_pass("prune", tiny_lm_graph, host_target, method="wanda")


@pytest.mark.slow
@pytest.mark.parametrize("method,settings,bar", [
    ("wanda", {"sparsity": 0.5}, 0.25),
    ("sparsegpt", {"sparsity": 0.5}, 0.25),
    ("sparsegpt", {"pattern": "2:4"}, 0.60),
])
def test_quality_on_the_fixture(method, settings, bar, fixture_lm_spec, fixture_lm_graph, two_of_four_target):
    """Held-out perplexity increase (first 3000 tokens; calibration 32 x 128 training tokens) within the
    issue's bars. Measured: wanda 50% +9.5%, sparsegpt 50% +5.9%, sparsegpt 2:4 +12.5% (base 10.00)."""
    calibration = calibration_samples(fixture_lm_spec, num_samples=32, sequence_length=128)
    outcome = run_pass("prune", fixture_lm_graph, two_of_four_target, calibration, method=method, **settings)
    base = heldout_perplexity(fixture_lm_graph, fixture_lm_spec, 3000)
    increase = heldout_perplexity(outcome.graph, fixture_lm_spec, 3000) / base - 1
    assert increase <= bar


@pytest.mark.slow
def test_pruned_fixture_compiles_and_reports_dense_storage(tmp_path):
    report = pass_report(compile_fixture(tmp_path, "  - prune: {method: magnitude, sparsity: 0.5}\n"), "prune")
    assert "buys no size or speed" in report["stats"]["storage"]
