"""What ``slmc eval`` and ``slmc generate`` act on: an artifact directory or a model, run alike.

Both become a ``Subject``: a numpy-in, numpy-out ``run`` function plus the task, tokenizer and KV
cache, so quality is measured the same way on the compiled artifact and on the eager model, and
the subject's own held-out text where it has one (``heldout_text``: the built-in model's entry in
``slmc.models.HELDOUT_TEXTS``, for an artifact that of the model it was compiled from, else its
recipe's ``verify.text`` when that is a built-in text set).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slmc.artifact.layout import MANIFEST
from slmc.data.texts import is_text_set
from slmc.errors import InputError
from slmc.graph.kv_cache import KVCacheSpec, StepFunction
from slmc.models import HELDOUT_TEXTS


@dataclass
class Subject:
    description: str
    task: str
    tokenizer: Any
    kv_cache: KVCacheSpec | None
    run: Callable[..., list[np.ndarray]]
    heldout_text: str | None = None  # a built-in text set (slmc.data.texts) the model did not train on

    @property
    def step(self) -> StepFunction:
        """The causal-LM step function (``slmc.graph.kv_cache``)."""
        if self.task != "causal-lm" or self.kv_cache is None:
            raise InputError(f"{self.description} is not a causal LM with a KV cache (task {self.task!r})")

        def step(ids: np.ndarray, keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            logits, new_keys, new_values = self.run(ids, keys, values)
            return logits, new_keys, new_values

        return step

    def require_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise InputError(f"{self.description} carries no tokenizer")
        return self.tokenizer


def eager_runner(module: torch.nn.Module) -> Callable[..., list[np.ndarray]]:
    def run(*arrays: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return [o.detach().numpy() for o in outs]

    return run


def open_subject(ref: str, recipe: str | None = None, target: str | None = None, device: str | None = None) -> Subject:
    """An artifact directory (holding ``manifest.json``) or any model reference ``slmc`` accepts.

    With ``recipe`` (models only), the recipe's passes run for ``target`` (default: the recipe's,
    else ``host``) and the subject is the compressed graph run eagerly: the reference the compiled
    artifact is verified against. With ``device`` (``rpc://HOST:PORT``, artifacts only) the artifact
    runs on that TVM RPC server (``slmc.artifact.remote_runtime.RemoteModel``; the session lasts
    as long as the process).
    """
    if (Path(ref) / MANIFEST).is_file():
        if recipe is not None:
            raise InputError(f"{ref} is a compiled artifact: --recipe applies to a model, not to an artifact")
        from slmc.artifact.remote_runtime import open_artifact

        model = open_artifact(ref, device)
        tokenizer = model.tokenizer if model.manifest.tokenizer is not None else None
        where = f" on {device}" if device is not None else ""
        return Subject(f"artifact {ref}{where}", model.manifest.task, tokenizer, model.kv_cache, model.run_numpy,
                       _heldout_text(model.manifest.model.name, (model.manifest.recipe.get("verify") or {}).get("text")))
    if device is not None:
        raise InputError(f"--device {device} runs a compiled artifact; {ref} is not an artifact directory (no {MANIFEST})")
    from slmc.frontend.model_source import load_model

    if recipe is not None:
        return _compressed_subject(ref, recipe, target)
    spec = load_model(ref)
    spec.module.eval()
    return Subject(f"eager model {spec.name}", spec.task, spec.tokenizer, spec.kv_cache, eager_runner(spec.module),
                   HELDOUT_TEXTS.get(spec.name))


def _heldout_text(model_name: str, verify_text: str | None) -> str | None:
    """The model's own held-out text, else the recipe's ``verify.text`` when it is a built-in text set."""
    return HELDOUT_TEXTS.get(model_name) or (verify_text if is_text_set(verify_text) else None)


def _compressed_subject(ref: str, recipe_ref: str, target_ref: str | None) -> Subject:
    from slmc.driver.compress import compress
    from slmc.models.context_length import fit_context
    from slmc.frontend.model_source import load_model
    from slmc.spec.recipe import check_against_target, load_recipe
    from slmc.spec.target import load_target

    recipe = load_recipe(recipe_ref)
    target = load_target(target_ref or recipe.document.target or "host")
    check_against_target(recipe, target)
    spec = load_model(ref)
    spec.module.eval()
    fit_context(spec, recipe, target)
    compressed = compress(spec, recipe, target)
    passes = ", ".join(step.name for step in recipe.steps) or "no passes"
    return Subject(f"eager model {spec.name} after {recipe.source} ({passes}) for {target.name}", spec.task,
                   compressed.tokenizer, compressed.kv_cache, eager_runner(compressed.final.module),
                   _heldout_text(spec.name, recipe.verify.text))

