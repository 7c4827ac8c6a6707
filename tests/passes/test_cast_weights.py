import pytest
import torch

from slmc.spec.pass_registry import PassContext, get_pass

# cast_weights against eager fp32 on tiny-lm logits (4 random inputs of 16..64 tokens).
# fp16 weight rounding: measured max abs error 7.2e-4 on logits of magnitude ~2.4, cosine 1.0000.
TOLERANCE = {"max_abs": 2e-3, "min_cosine": 0.99999}


def run(graph, host_target, **settings):
    definition = get_pass("cast_weights")
    return definition.run(graph.clone(), definition.config(**settings), PassContext(host_target))


def test_structure_large_weights_stored_fp16_small_ones_skipped(tiny_lm_graph, host_target):
    outcome = run(tiny_lm_graph, host_target)
    tensors = outcome.graph.tensors()
    assert tensors["lm_head.weight"].dtype == torch.float16
    assert tensors["norm.weight"].dtype == torch.float32  # 128 elements < min_elements
    assert outcome.stats["tensors_cast"] == 14  # embed + 12 block linears + lm_head
    assert {s.node for s in outcome.skipped} >= {"norm_weight"}
    assert all("min_elements" in s.reason for s in outcome.skipped)
    widen = [n for n in outcome.graph.op_nodes() if n.target is torch.ops.aten._to_copy.default]
    assert len(widen) == 14
    assert outcome.stats["bytes_saved"] == tiny_lm_graph.weight_bytes() - outcome.graph.weight_bytes()


def test_numerics_against_eager(tiny_lm_graph, host_target, lm_inputs):
    outcome = run(tiny_lm_graph, host_target)
    for n in (16, 64):
        x = lm_inputs(n, past=1, seed=n)
        ref = tiny_lm_graph.run(*x)[0]
        out = outcome.graph.run(*x)[0]
        assert torch.max(torch.abs(ref - out)).item() <= TOLERANCE["max_abs"]
        cos = torch.nn.functional.cosine_similarity(ref.flatten(), out.flatten(), dim=0).item()
        assert cos >= TOLERANCE["min_cosine"]


def test_include_exclude_patterns(tiny_lm_graph, host_target):
    outcome = run(tiny_lm_graph, host_target, include=["blocks.*"], exclude=["*down_proj*"])
    tensors = outcome.graph.tensors()
    assert tensors["lm_head.weight"].dtype == torch.float32
    assert tensors["blocks.0.mlp.down_proj.weight"].dtype == torch.float32
    assert tensors["blocks.0.mlp.up_proj.weight"].dtype == torch.float16


def test_negative_target_without_fp16(host_target):
    config = get_pass("cast_weights").config()
    fp32_only = host_target.model_copy(update={"dtypes": host_target.dtypes.model_copy(update={"weights": ["float32"]})})
    assert config.target_problems(host_target) == []
    (field, message), = config.target_problems(fp32_only)
    assert field == "dtype" and "float16" in message


def test_negative_settings_out_of_range():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        get_pass("cast_weights").config(min_elements=0)
    with pytest.raises(ValidationError):
        get_pass("cast_weights").config(dtype="int4")


# bfloat16 (8 significand bits) on the same inputs: measured max abs error 5.7e-3 on logits of
# magnitude ~2.4, cosine 0.999997 (8x the fp16 error, as 2**-8 vs 2**-11 predicts).
BF16_TOLERANCE = {"max_abs": 1.5e-2, "min_cosine": 0.99999}


def test_bfloat16_numerics_against_eager(tiny_lm_graph, host_target, lm_inputs):
    outcome = run(tiny_lm_graph, host_target, dtype="bfloat16")
    assert outcome.graph.tensors()["lm_head.weight"].dtype == torch.bfloat16
    assert outcome.stats["tensors_cast"] == 14
    for n in (16, 64):
        x = lm_inputs(n, past=1, seed=n)
        ref, out = tiny_lm_graph.run(*x)[0], outcome.graph.run(*x)[0]
        assert torch.max(torch.abs(ref - out)).item() <= BF16_TOLERANCE["max_abs"]
        assert torch.nn.functional.cosine_similarity(ref.flatten(), out.flatten(), dim=0).item() >= BF16_TOLERANCE["min_cosine"]


def test_negative_mobile_gpus_have_no_bfloat16():
    from slmc.spec.target import load_target

    config = get_pass("cast_weights").config(dtype="bfloat16")
    for name in ("mali-g710", "adreno-740"):
        (field, message), = config.target_problems(load_target(name))
        assert field == "dtype" and "'bfloat16' is not supported" in message


def test_negative_cli_bfloat16_recipe_for_mali_exits_2_before_the_model_loads(tmp_path):
    import json
    import shutil
    import subprocess

    (tmp_path / "bf16.yaml").write_text("passes:\n  - constant_folding: {}\n  - cast_weights: {dtype: bfloat16}\n")
    # The model reference cannot load: the target error comes first, so nothing of the model was loaded.
    result = subprocess.run([shutil.which("slmc"), "compile", "-m", "no_such_package.models:build", "-t", "mali-g710",
                             "-r", "bf16.yaml", "-o", "out", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "RecipeTargetMismatchError" and error["target"] == "mali-g710"  # a recipe problem
    (problem,) = error["problems"]
    assert problem["path"] == "passes.1.cast_weights.dtype"
    assert "'bfloat16' is not supported" in problem["message"] and "mali-g710" in problem["message"]
    assert not (tmp_path / "out").exists()
