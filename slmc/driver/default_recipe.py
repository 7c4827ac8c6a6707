"""Which built-in recipe a compile gets when it is given none.

``default`` compresses (int4 weights, a perplexity gate on held-out text: slmc/recipes/default.yaml).
Its gate is measured on the held-out text of the model it was measured for (``stdlib-heldout``, the
built-in fixture LM's: ``slmc.models.HELDOUT_TEXTS``), so it needs a causal LM with a tokenizer whose
own held-out text that is, and a target that honours its settings; a compile without a recipe for
anything else gets the lossless ``cleanup`` instead (a gate on another model's text would judge
nothing), and the manifest's ``recipe_choice`` says which and why (nothing is dropped silently).
"""

from __future__ import annotations

from dataclasses import dataclass

from slmc.graph.ir import ModelSpec
from slmc.models import HELDOUT_TEXTS
from slmc.spec.recipe import Recipe, fitting_builtin_recipes, load_recipe
from slmc.spec.target import TargetDescriptor

DEFAULT = "default"
LOSSLESS = "cleanup"


@dataclass(frozen=True)
class RecipeChoice:
    """The built-in recipe chosen and why (``note``, recorded as the manifest's ``recipe_choice``)."""

    recipe: Recipe
    name: str
    note: str


def before_model(target: TargetDescriptor, onnx: bool) -> RecipeChoice:
    """The choice that can be made before the model loads: ``default`` unless the target cannot
    honour it or the model is an ONNX file (no fx passes, no perplexity gate)."""
    if onnx:
        return RecipeChoice(load_recipe(LOSSLESS), LOSSLESS, f"no recipe given: built-in '{LOSSLESS}' "
                            "(an ONNX model takes no passes or perplexity gate)")
    if DEFAULT not in fitting_builtin_recipes(target):
        return RecipeChoice(load_recipe(LOSSLESS), LOSSLESS, f"no recipe given: built-in '{LOSSLESS}' (target "
                            f"'{target.name}' cannot honour the built-in '{DEFAULT}': `slmc recipe check default -t {target.name}`)")
    return RecipeChoice(load_recipe(DEFAULT), DEFAULT, f"no recipe given: built-in '{DEFAULT}' (lossless: -r {LOSSLESS})")


def for_model(choice: RecipeChoice, spec: ModelSpec) -> RecipeChoice:
    """``choice`` once the model is known: ``cleanup`` when the model cannot take ``default``'s gate."""
    gate_text = choice.recipe.evaluation_text()
    if choice.name != DEFAULT or (spec.task == "causal-lm" and spec.tokenizer is not None
                                  and HELDOUT_TEXTS.get(spec.name) == gate_text):
        return choice
    if spec.task != "causal-lm":
        what = f"is a {spec.task} model, not a causal LM"
    elif spec.tokenizer is None:
        what = "has no tokenizer"
    else:
        what = f"has no held-out text of its own that is '{gate_text}'"
    return RecipeChoice(load_recipe(LOSSLESS), LOSSLESS, f"no recipe given: built-in '{LOSSLESS}' (model '{spec.name}' "
                        f"{what}, so the built-in '{DEFAULT}' recipe's perplexity gate cannot apply)")
