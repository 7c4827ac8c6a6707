"""With no recipe given: the compressing built-in ``default``, or ``cleanup`` (lossless) with the reason."""

from pathlib import Path

import torch

import slmc
from slmc.driver import default_recipe
from slmc.frontend.model_source import load_model
from slmc.graph.ir import ModelSpec
from slmc.models import tiny_lm
from slmc.spec.target import load_target


def test_default_compresses_and_gates_perplexity(host_target):
    choice = default_recipe.before_model(host_target, onnx=False)
    assert choice.name == "default" and "-r cleanup" in choice.note
    (step,) = choice.recipe.steps
    assert step.name == "quantize" and step.config.bits == 4 and step.config.group_size == 32
    assert choice.recipe.verify.gates.max_perplexity_increase == 0.02
    fixture = load_model("fixture-lm")
    assert default_recipe.for_model(choice, fixture) is choice  # the model whose held-out text the gate measures


def test_a_causal_lm_whose_held_out_text_the_gate_does_not_measure_gets_cleanup(host_target):
    choice = default_recipe.for_model(default_recipe.before_model(host_target, onnx=False), tiny_lm.build())
    assert choice.name == "cleanup" and "'tiny-lm' has no held-out text of its own that is 'stdlib-heldout'" in choice.note


def test_cleanup_is_lossless():
    recipe = default_recipe.load_recipe("cleanup")
    assert [s.name for s in recipe.steps] == ["constant_folding", "dead_code_elimination"]
    assert recipe.verify.gates.max_perplexity_increase is None


def test_a_model_the_gate_cannot_apply_to_gets_cleanup_and_says_why(host_target):
    spec = ModelSpec(torch.nn.Linear(4, 4), (torch.randn(2, 4),), name="linear")
    choice = default_recipe.for_model(default_recipe.before_model(host_target, onnx=False), spec)
    assert choice.name == "cleanup" and "'linear' is a generic model" in choice.note


def test_an_onnx_model_or_a_target_without_int4_gets_cleanup(tmp_path):
    assert default_recipe.before_model(load_target("host"), onnx=True).name == "cleanup"
    text = (Path(slmc.__file__).parent.parent / "targets" / "host.yaml").read_text()
    (tmp_path / "no-int4.yaml").write_text(text.replace("name: host", "name: no-int4", 1).replace(", int4", "").replace("int4, ", ""))
    choice = default_recipe.before_model(load_target(tmp_path / "no-int4.yaml"), onnx=False)
    assert choice.name == "cleanup" and "cannot honour" in choice.note
