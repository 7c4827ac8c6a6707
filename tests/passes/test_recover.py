import pytest
import torch
from pass_helpers import calibration_samples, heldout_perplexity, run_pass

from slmc.spec.pass_registry import PassContext, get_pass


@pytest.fixture(scope="module")
def tiny_calibration():
    from slmc.models import tiny_lm

    return calibration_samples(tiny_lm.build(), num_samples=8, sequence_length=64)


def _recover(graph, original, target, calibration, **settings):
    definition = get_pass("recover")
    return definition.run(graph.clone(), definition.config(**settings), PassContext(target, calibration, original))


def test_distillation_lowers_the_loss_and_keeps_zeros(tiny_lm_graph, host_target, tiny_calibration):
    pruned = run_pass("prune", tiny_lm_graph, host_target, method="magnitude", sparsity=0.5).graph
    outcome = _recover(pruned, tiny_lm_graph, host_target, tiny_calibration, steps=20, samples_per_step=2, learning_rate=1e-3)
    stats = outcome.stats
    assert stats["trained_tensors"] == 13  # every linear weight (tiny-lm has no biases)
    assert stats["distillation_loss"]["last_step"] < stats["distillation_loss"]["first_step"]
    ppl = stats["validation_perplexity"]
    assert set(ppl) == {"original", "before", "after"}
    assert stats["kept"] == ("after" if ppl["after"] <= ppl["before"] else "before")
    before, after = pruned.tensors(), outcome.graph.tensors()
    for name, weight in before.items():
        if name.startswith("blocks."):
            assert torch.all(after[name][weight == 0] == 0)  # pruned weights stay pruned
    assert not any(after[f"{layer}.weight"].requires_grad for layer in ("lm_head", "blocks.0.attn.q_proj"))
    assert not torch.equal(before["lm_head.weight"], after["lm_head.weight"])
    assert torch.equal(pruned.tensors()["blocks.0.mlp.up_proj.weight"], before["blocks.0.mlp.up_proj.weight"])  # input untouched


def test_exclude_keeps_layers_frozen(tiny_lm_graph, host_target, tiny_calibration):
    outcome = _recover(tiny_lm_graph, tiny_lm_graph, host_target, tiny_calibration, steps=1, exclude=["*lm_head"])
    assert outcome.stats["trained_tensors"] == 12
    assert any("excluded" in s.reason for s in outcome.skipped)


def test_negative_without_teacher_or_calibration(tiny_lm_graph, host_target, tiny_calibration):
    with pytest.raises(ValueError, match="teacher"):
        run_pass("recover", tiny_lm_graph, host_target, tiny_calibration, steps=1)
    with pytest.raises(ValueError, match="calibration"):
        _recover(tiny_lm_graph, tiny_lm_graph, host_target, (), steps=1)
    one = _recover(tiny_lm_graph, tiny_lm_graph, host_target, tiny_calibration[:1], steps=1, validation_share=0.9)
    assert "validation_perplexity" not in one.stats  # nothing held back from a single sample
    assert get_pass("recover").config().needs_calibration() is not None


def test_nothing_to_train_is_refused_with_the_reasons(tiny_lm_graph, host_target, tiny_calibration):
    with pytest.raises(ValueError, match="recover has no linear layer to train: blocks.0.attn.q_proj: excluded by include/exclude patterns; .*; and 10 more"):
        _recover(tiny_lm_graph, tiny_lm_graph, host_target, tiny_calibration, steps=1, include=["lm_head"],
                 exclude=["lm_head"])


@pytest.mark.slow
def test_recover_after_two_of_four_on_the_fixture(fixture_lm_spec, fixture_lm_graph, tmp_path):
    """SparseGPT 2:4, then 60 distillation steps on 48 training windows (16 held back): held-out
    perplexity (first 3000 tokens) improves. Measured: original 10.00, pruned 11.31, recovered 10.92."""
    from slmc.spec.target import load_target

    from importlib import resources

    target_text = tmp_path / "t.yaml"
    host = (resources.files("slmc.targets") / "host.yaml").read_text()
    target_text.write_text(host.replace("name: host", "name: host-2of4").replace("patterns: []", "patterns: ['2:4']"))
    target = load_target(target_text)
    calibration = calibration_samples(fixture_lm_spec, num_samples=64, sequence_length=128)
    pruned = run_pass("prune", fixture_lm_graph, target, calibration, method="sparsegpt", pattern="2:4").graph
    outcome = _recover(pruned, fixture_lm_graph, target, calibration, steps=60, samples_per_step=4, learning_rate=1e-4)
    before = heldout_perplexity(pruned, fixture_lm_spec, 3000)
    after = heldout_perplexity(outcome.graph, fixture_lm_spec, 3000)
    assert after < before
