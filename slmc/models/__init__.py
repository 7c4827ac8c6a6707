"""Built-in example models, addressed by name on the CLI and in recipes."""

from __future__ import annotations

from collections.abc import Callable

from slmc.ir import ModelSpec
from slmc.models import tiny_lm

BUILTIN_MODELS: dict[str, Callable[[], ModelSpec]] = {
    "tiny-lm": tiny_lm.build,
}
DEFAULT_MODEL = "tiny-lm"
