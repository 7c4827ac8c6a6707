"""The benchmarked real-size shapes build as transformers models with the published parameter counts.

Built on the meta device (nothing allocated); compiling them is left to ``slmc bench`` (minutes each).
"""

from __future__ import annotations

import pytest
import torch

from slmc.bench.models import BENCH_MODELS, CONFIGS, PUBLISHED_PARAMETERS, build_module


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_shape_has_the_published_parameter_count(name):
    with torch.device("meta"):
        model = build_module(name)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMETERS[name]
    assert name in BENCH_MODELS


def test_qwen3_and_gemma3_shapes_carry_their_architecture_features():
    with torch.device("meta"):
        qwen3, gemma3 = build_module("qwen3-0.6b"), build_module("gemma-3-270m")
    assert qwen3.config.head_dim * qwen3.config.num_attention_heads != qwen3.config.hidden_size
    assert hasattr(qwen3.model.layers[0].self_attn, "q_norm") and hasattr(gemma3.model.layers[0].self_attn, "q_norm")
    assert [i for i, t in enumerate(gemma3.config.layer_types) if t == "full_attention"] == [5, 11, 17]
    assert gemma3.config.sliding_window == 512 and gemma3.config.query_pre_attn_scalar == 256
    assert gemma3.config.rope_parameters["sliding_attention"]["rope_theta"] == 10000.0
    assert gemma3.lm_head.weight is gemma3.model.embed_tokens.weight  # tied


def test_the_output_head_is_found_inside_a_wrapper_and_its_absence_is_a_model_error():
    from slmc.bench.models import head_elements
    from slmc.errors import ModelError

    with torch.device("meta"):
        model = build_module("smollm-135m")
    assert head_elements(torch.nn.ModuleDict({"model": model})) == 49152 * 576  # the tied table, as the head reads it
    with pytest.raises(ModelError, match="Linear holds no transformers model with an output head"):
        head_elements(torch.nn.Linear(4, 4))
