"""The model of an artifact as TVM system-library objects, for the static runner (``slmc package
--flavour static``; slmc.native.static_build).

An artifact holds its model's code as ``model.so``, which only a dynamic loader opens. The static
runner links the code in instead, so it is built again: the artifact's model (``manifest.model.name``)
through the manifest's recipe (every setting recorded, ``Recipe.normalized``) for the manifest's
target, exactly as ``slmc.compile`` does (context fit, trace and calibration, passes, lowering, slmc's
deterministic Relax pipeline), with ``system_lib`` on. The compiled graph's fingerprint must equal
the manifest's ``model.compiled_fingerprint`` (the same weights and graph; ``VerificationError``
otherwise), and the bundle's run then compares its tokens with ``slmc generate`` on the artifact.

Preconditions: the model loads by its recorded name (a built-in model or ``package.module:factory``
importable here; ``InputError`` otherwise) and the artifact is a torch model's (an ONNX artifact has
no recipe passes to replay: ``InputError``).
"""

from __future__ import annotations

import json
from pathlib import Path

from slmc.driver import interrupt
from slmc.artifact.manifest import Manifest
from slmc.backend.lowering import build, export_system_library, to_relax
from slmc.driver.compress import compress, trace_and_calibrate
from slmc.errors import InputError, VerificationError
from slmc.frontend.model_source import load_model
from slmc.models.context_length import fit_context
from slmc.spec.recipe import recipe_from_document
from slmc.spec.yaml_source import parse_yaml


def system_library_objects(artifact: Path, manifest: Manifest, directory: Path) -> list[Path]:
    """The object files of ``artifact``'s model built as a system library, written into ``directory``."""
    if manifest.model.format == "onnx":
        raise InputError(f"{artifact}: the static flavour rebuilds the model from its recipe; an ONNX artifact "
                         "(manifest field model.format) is not supported")
    recipe = recipe_from_document(parse_yaml(json.dumps(manifest.recipe), f"<recipe of {artifact}/manifest.json>"), artifact)
    target = manifest.target
    spec = load_model(manifest.model.name)
    fit_context(spec, recipe, target)
    timings: dict[str, float] = {}
    compressed = compress(spec, recipe, target, timings, trace_and_calibrate(spec, recipe, target, timings))
    rebuilt = compressed.final.fingerprint()
    if rebuilt != manifest.model.compiled_fingerprint:
        raise VerificationError(f"rebuilding {artifact}'s model as a system library gave the compiled graph {rebuilt}, the "
                                f"manifest records {manifest.model.compiled_fingerprint} (model.compiled_fingerprint): "
                                "the model or slmc changed since the artifact was compiled; compile it again")
    interrupt.stage("lower")
    program = to_relax(compressed.final)
    interrupt.stage("build")
    executable = build(program, target, compressed.kv_cache, system_lib=True)
    _check_same_cache_contract(artifact, manifest, program.residency)
    return export_system_library(executable, target, directory)


def _check_same_cache_contract(artifact: Path, manifest: Manifest, residency: object) -> None:
    """The rebuilt library must offer the functions the manifest's KV-cache contract names (the runner
    calls ``resident_all``/``resident_last`` for a resident artifact, ``main`` otherwise)."""
    recorded = manifest.kv_cache
    if recorded is None:
        return
    mode = getattr(residency, "mode", "copy")
    last = mode == "resident" and getattr(residency, "last_position", None) is None
    if (mode, last) != (recorded.mode, recorded.last_position):
        raise VerificationError(f"rebuilding {artifact}'s model as a system library gave the KV-cache contract {mode} "
                                f"(last position only: {last}), the manifest records {recorded.mode} (last position only: "
                                f"{recorded.last_position}) in field kv_cache: compile the artifact again")
