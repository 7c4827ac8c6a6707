"""``cast_weights``: store float32 weights as float16 or bfloat16 and widen them at run time.

Halves the weight bytes of every cast tensor; compute stays in float32, so the only error is the
rounding of the weights: relative error at most 2**-11 per weight for float16 (Micikevicius et al.,
2018, "Mixed Precision Training"), 2**-8 for bfloat16 (8 significand bits; Kalamkar et al., 2019,
"A Study of BFLOAT16 for Deep Learning Training"). Tensors smaller than ``min_elements`` (norm
scales, biases) and tensors that are not float32 are left alone and listed in the report. The
target must list ``dtype`` among its weight dtypes (mobile GPUs have no bfloat16).
"""

from __future__ import annotations

import fnmatch
from typing import Literal

import torch
from pydantic import Field

from slmc.graph.ir import Graph, fetch_attr, set_attr
from slmc.spec.pass_registry import PassConfig, PassContext, PassOutcome, Skip, register_pass
from slmc.spec.target import TargetDescriptor


class CastWeightsConfig(PassConfig):
    dtype: Literal["float16", "bfloat16"] = "float16"
    min_elements: int = Field(4096, ge=1, le=1 << 40, description="smaller tensors stay float32")
    include: list[str] = Field(default_factory=lambda: ["*"], min_length=1, description="glob patterns of weight names")
    exclude: list[str] = Field(default_factory=list, description="glob patterns of weight names to keep")

    def target_problems(self, target: TargetDescriptor) -> list[tuple[str, str]]:
        if target.supports_weight_dtype(self.dtype):
            return []
        return [("dtype", f"weight dtype '{self.dtype}' is not supported; the target supports {target.dtypes.weights}")]


def _selected(name: str, config: CastWeightsConfig) -> bool:
    included = any(fnmatch.fnmatchcase(name, p) for p in config.include)
    return included and not any(fnmatch.fnmatchcase(name, p) for p in config.exclude)


@register_pass("cast_weights", config=CastWeightsConfig, must_follow=("constant_folding",), lossy=True)
def cast_weights(graph: Graph, config: CastWeightsConfig, context: PassContext) -> PassOutcome:
    """Store large float32 weights in float16; insert a widening cast before their users.

    Must follow ``constant_folding`` so folded constants are computed from the float32 weights.
    """
    dtype = getattr(torch, config.dtype)
    cast, saved, skipped = 0, 0, []
    for node in list(graph.graph.nodes):
        if node.op != "get_attr" or not _selected(str(node.target), config):
            continue
        weight = fetch_attr(graph.module, str(node.target))
        if not isinstance(weight, torch.Tensor):
            continue
        if weight.dtype != torch.float32:
            skipped.append(Skip(node.name, f"dtype is {weight.dtype}, not float32"))
            continue
        if weight.numel() < config.min_elements:
            skipped.append(Skip(node.name, f"{weight.numel()} elements < min_elements {config.min_elements}"))
            continue
        set_attr(graph.module, str(node.target), weight.detach().to(dtype))
        with graph.graph.inserting_after(node):
            widen = graph.graph.call_function(torch.ops.aten._to_copy.default, (node,), {"dtype": torch.float32})
        node.replace_all_uses_with(widen, delete_user_cb=lambda user: user is not widen)
        cast += 1
        saved += weight.numel() * (weight.element_size() - torch.empty((), dtype=dtype).element_size())
    graph.module.recompile()
    return PassOutcome(graph, {"tensors_cast": cast, "bytes_saved": saved}, skipped)
