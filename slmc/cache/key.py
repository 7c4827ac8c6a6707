"""The compile cache's key: a sha256 over everything a compile's artifact depends on.

Components, each hashed on its own (``slmc cache ls`` and the compile's JSON show them, so a miss
can be traced to the input that changed):

- ``model``: the traced graph's code and every weight (``Graph.fingerprint``), plus what else the
  artifact carries of the model: name, task, input/output names, dynamic shapes, KV-cache layout,
  the tokenizer's bytes.
- ``recipe``: the normalized recipe (every setting with its default filled in) and the bytes of
  the evaluation text a perplexity gate reads.
- ``target``: the resolved descriptor (``native`` fields replaced by this machine's values), the
  verification device, and the bytes of the tuning database records for it (``slmc.backend.tuning_db``),
  which decide kernel schedules.
- ``calibration``: the calibration samples as loaded (dtype, shape and bytes of every tensor).
- ``versions``: slmc, TVM, tvm-ffi, torch, Python, and a hash of slmc's own source files (an
  edited checkout is not the same compiler even when the version string is).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from slmc.graph.ir import Graph, ModelSpec
from slmc.spec.recipe import Recipe
from slmc.spec.target import TargetDescriptor
from slmc.data.texts import is_text_set

KEY_FORMAT = 1


def _json_digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str, separators=(",", ":")).encode()).hexdigest()


def _tokenizer_digest(tokenizer: Any) -> str | None:
    """The tokenizer's identity: its class, and its file's bytes when it has one."""
    if tokenizer is None:
        return None
    h = hashlib.sha256(type(tokenizer).__qualname__.encode())
    path = getattr(tokenizer, "path", None)
    if path is not None:
        h.update(Path(path).read_bytes())
    h.update(repr(getattr(tokenizer, "bos_token", None)).encode())
    return h.hexdigest()


def model_digest(spec: ModelSpec, original: Graph) -> str:
    meta = {
        "fingerprint": original.fingerprint(),
        "name": spec.name,
        "task": spec.task,
        "inputs": list(original.input_names),
        "outputs": list(original.output_names or ()),
        "dynamic_shapes": repr(original.dynamic_shapes),
        "kv_cache": spec.kv_cache.to_json() if spec.kv_cache is not None else None,
        "tokenizer": _tokenizer_digest(spec.tokenizer),
    }
    return _json_digest(meta)


def recipe_digest(recipe: Recipe) -> str:
    text = recipe.verify.text
    text_bytes = None
    if text is not None and not is_text_set(text):
        text_bytes = hashlib.sha256(recipe.resolve_path(text).read_bytes()).hexdigest()
    pass_texts = {f"{i}.{key}": hashlib.sha256(recipe.resolve_path(value).read_bytes()).hexdigest()
                  for i, step in enumerate(recipe.steps) for key, value in step.config.text_files().items()
                  if not is_text_set(value)}
    return _json_digest({"recipe": recipe.normalized(), "evaluation_text": text_bytes, **({"pass_texts": pass_texts} if pass_texts else {})})


def tuning_digest(target: TargetDescriptor) -> str:
    """sha256 over the tuning database files ``compile`` would apply for ``target`` (none: a constant)."""
    from slmc.backend.tuning_db import database_dirs

    h = hashlib.sha256()
    for directory in database_dirs(target):
        for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def calibration_digest(samples: Sequence[tuple[torch.Tensor, ...]]) -> str:
    h = hashlib.sha256(str(len(samples)).encode())
    for sample in samples:
        for tensor in sample:
            t = tensor.detach().contiguous().cpu()
            h.update(f"{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@cache
def source_digest() -> str:
    """sha256 over slmc's Python sources and data files (the installed package, passes and targets included)."""
    import slmc

    root = Path(slmc.__file__).parent
    roots = [root] + [Path(m.__path__[0]) for m in _subpackages() if Path(m.__path__[0]).parent != root]
    h = hashlib.sha256()
    for base in roots:
        for path in sorted(p for p in base.rglob("*") if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts):
            h.update(path.relative_to(base).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _subpackages() -> list[Any]:
    import slmc.passes
    import slmc.targets

    return [slmc.passes, slmc.targets]


def versions() -> dict[str, str]:
    import platform

    import tvm

    import slmc

    return {"slmc": slmc.__version__, "tvm": tvm.__version__, "tvm_ffi": metadata.version("apache-tvm-ffi"),
            "torch": torch.__version__, "python": platform.python_version(), "slmc_source": source_digest()}


def key_components(spec: ModelSpec, original: Graph, recipe: Recipe, target: TargetDescriptor,
                   calibration: Sequence[tuple[torch.Tensor, ...]], device: str | None) -> dict[str, str]:
    """``{component: sha256}`` for the inputs listed in the module docstring."""
    return {
        "model": model_digest(spec, original),
        "recipe": recipe_digest(recipe),
        "target": _json_digest({"descriptor": target.model_dump(mode="json"), "tvm": target.tvm_dict(), "device": device,
                                "tuning": tuning_digest(target)}),
        "calibration": calibration_digest(calibration),
        "versions": _json_digest(versions()),
    }


def cache_key(components: dict[str, str]) -> str:
    """The entry name: sha256 over the key format and every component."""
    return _json_digest({"format": KEY_FORMAT, **components})
