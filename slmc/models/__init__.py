"""Built-in example models, addressed by name on the CLI and in recipes.

Layer 4 (beside ``slmc.quantization`` and ``slmc.artifact``, which it does not import): imports
``slmc.graph`` and below.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from slmc.graph.ir import ModelSpec
from slmc.models import tiny_lm

FIXTURE_DIR = Path(__file__).with_name("fixture_lm")


def fixture_lm() -> ModelSpec:
    """The trained fixture: a 4.85M-parameter Llama over Python stdlib source (``train_fixture_lm.py``)."""
    from slmc.models.huggingface import load_hf_model

    spec = load_hf_model(FIXTURE_DIR)
    spec.name = "fixture-lm"
    return spec


BUILTIN_MODELS: dict[str, Callable[[], ModelSpec]] = {
    "fixture-lm": fixture_lm,
    "tiny-lm": tiny_lm.build,
}
DEFAULT_MODEL = "fixture-lm"
# The built-in text set (slmc.data.texts) each built-in model was held out from in training: what
# `slmc eval` measures it on when no --text is given.
HELDOUT_TEXTS: dict[str, str] = {"fixture-lm": "stdlib-heldout"}
