"""Recipe against an NPU target: what is offloaded must be full-integer (int8 weights and activations).

slmc offloads ``w8a8_linear`` layers only (static int8 activations, int8 weights; the quantize pass's
``scheme: w8a8``). A recipe without such a step would offload nothing, so for a ``kind: npu`` target
it is bad input (``RecipeError``, exit 2) naming ``passes`` - the stricter of the two possible
behaviours (the other being an artifact whose every layer falls back to the CPU), chosen because a
user compiling for an NPU expects code for the NPU. Layers a w8a8 recipe leaves in float (``exclude``,
``overrides: skip``) fall back to the CPU with that reason in the partition report.
"""

from __future__ import annotations

from slmc.errors import FieldProblem
from slmc.spec.recipe import Recipe
from slmc.spec.target import TargetDescriptor


def npu_recipe_problems(recipe: Recipe, target: TargetDescriptor) -> list[FieldProblem]:
    """A problem naming ``passes`` unless some quantize step uses ``scheme: w8a8`` (the NPU backend's
    ``recipe_problems``; ``slmc.backend.base.check_recipe`` raises it as a ``RecipeError``)."""
    for step in recipe.steps:
        if step.name == "quantize" and getattr(step.config, "scheme", None) == "w8a8":
            return []
    return [FieldProblem(
        "passes", f"target '{target.name}' is an NPU, which executes full-integer code only: the recipe needs a "
                  "'quantize: {scheme: w8a8}' step (int8 weights and static int8 activations), else nothing can "
                  "be offloaded; see examples/recipes/npu-int8.yaml")]
