"""Resolving what the user names as the model into a ``ModelSpec``.

Accepted: a ``ModelSpec``; a ``torch.nn.Module`` with ``example_inputs`` (Python API); a built-in
model name (``tiny-lm``); or an import path ``package.module:factory`` whose factory returns a
``ModelSpec`` or ``(module, example_inputs[, dynamic_shapes])``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch

from slmc.errors import ModelError, did_you_mean
from slmc.graph.ir import ModelSpec
from slmc.models import BUILTIN_MODELS

# A user factory that fails raises whatever its code raises; these are wrapped as ModelError.
FACTORY_FAILURES = (ImportError, AttributeError, RuntimeError, ValueError, TypeError, KeyError, OSError)


def _from_value(value: Any, name: str, example_inputs: Any, dynamic_shapes: Any) -> ModelSpec:
    if isinstance(value, ModelSpec):
        return value
    if isinstance(value, torch.nn.Module):
        if example_inputs is None:
            raise ModelError(f"model '{name}' is a torch.nn.Module: pass example_inputs (a tuple of tensors) to trace it")
        inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        if not all(isinstance(t, torch.Tensor) for t in inputs):
            raise ModelError(f"example_inputs of model '{name}' must be tensors, got {[type(t).__name__ for t in inputs]}")
        return ModelSpec(value, inputs, dynamic_shapes, name=name)
    if isinstance(value, tuple) and 2 <= len(value) <= 3 and isinstance(value[0], torch.nn.Module):
        return _from_value(value[0], name, value[1], value[2] if len(value) == 3 else dynamic_shapes)
    raise ModelError(
        f"model '{name}' resolved to {type(value).__name__}; expected a slmc.ModelSpec, a torch.nn.Module, "
        "or a tuple (module, example_inputs[, dynamic_shapes])"
    )


def _import_factory(ref: str) -> Any:
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ModelError(f"model '{ref}': an import path must look like 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"model '{ref}': cannot import module '{module_name}': {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"model '{ref}': module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if isinstance(obj, torch.nn.Module) or not callable(obj):
        return obj
    try:
        return obj()
    except FACTORY_FAILURES as exc:
        raise ModelError(f"model '{ref}': the factory raised {type(exc).__name__}: {exc}") from exc


def load_model(ref: Any, example_inputs: Any = None, dynamic_shapes: Any = None) -> ModelSpec:
    """Resolve ``ref`` into a ``ModelSpec`` (see the module docstring for what is accepted)."""
    if isinstance(ref, (ModelSpec, torch.nn.Module)):
        return _from_value(ref, getattr(ref, "name", type(ref).__name__), example_inputs, dynamic_shapes)
    if not isinstance(ref, str) or not ref:
        raise ModelError(f"model reference must be a name, an import path or a module, got {type(ref).__name__}")
    if ref in BUILTIN_MODELS:
        return BUILTIN_MODELS[ref]()
    if Path(ref).is_dir() and (Path(ref) / "config.json").is_file():
        from slmc.models.huggingface import load_hf_model

        return load_hf_model(ref)
    if Path(ref).is_dir():
        raise ModelError(f"model folder '{ref}' has no config.json: it is not a Hugging Face checkpoint folder")
    if _looks_like_path(ref) and not Path(ref).exists():
        raise ModelError(f"model path '{ref}' not found")
    if ":" in ref:
        return _from_value(_import_factory(ref), ref, example_inputs, dynamic_shapes)
    if ref.lower().endswith(".onnx"):
        raise ModelError(
            f"model '{ref}' is an ONNX file: only 'slmc compile' takes it (converted by TVM's ONNX frontend, "
            "without tracing or fx passes; see docs/onnx.md)"
        )
    raise ModelError(
        f"model '{ref}' is neither a built-in model nor a Hugging Face checkpoint folder (with config.json) nor an "
        f"import path 'package.module:factory'{did_you_mean(ref, BUILTIN_MODELS)}; built-in models: {', '.join(sorted(BUILTIN_MODELS))}"
    )


def _looks_like_path(ref: str) -> bool:
    """A reference written as a file-system path (a separator, or starting with '.' or '~'), not a name."""
    return "/" in ref or os.sep in ref or ref.startswith((".", "~"))
