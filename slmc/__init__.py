"""slmc: a declarative model-compression compiler for small language models.

``slmc.compile(model, recipe, target, out)`` turns a model, a YAML recipe and a target descriptor
into a verified Apache TVM artifact; ``slmc.load(path)`` runs it. The heavy modules (torch, TVM)
are imported on first use, so ``slmc --version`` and recipe checks stay fast.
"""

from __future__ import annotations

import sys
import warnings
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("slmc")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+source"

_EXPORTS = {
    "compile": "slmc.driver.compile",
    "CompileResult": "slmc.driver.compile",
    "load": "slmc.artifact.runtime",
    "CompiledModel": "slmc.artifact.runtime",
    "verify_artifact": "slmc.verify.artifact_check",
    "ModelSpec": "slmc.graph.ir",
    "SlmcError": "slmc.errors",
    "InputError": "slmc.errors",
    "RecipeError": "slmc.errors",
    "TargetError": "slmc.errors",
    "CompileError": "slmc.errors",
    "VerificationError": "slmc.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'slmc' has no attribute '{name}'")


def alias_deprecated_module(old: str, new: str) -> None:
    """Make the module ``old`` re-export the public names of ``new`` (its ``__all__``, else every name
    without a leading underscore) and warn that ``old`` is deprecated, naming ``new``.

    Precondition: called from the body of ``old`` while it is imported (the pass-author modules that
    moved into subpackages in issue 15: ``slmc/ir.py``, ``slmc/pass_registry.py``, ...; they go in the
    next release). The warning points at the importing line.
    """
    warnings.warn(f"{old} is deprecated and will be removed in the next release: import {new} instead",
                  DeprecationWarning, stacklevel=3)
    module = import_module(new)
    public = list(getattr(module, "__all__", None) or [name for name in vars(module) if not name.startswith("_")])
    namespace = vars(sys.modules[old])
    namespace.update({name: getattr(module, name) for name in public})
    namespace["__all__"] = public
