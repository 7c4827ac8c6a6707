"""Hugging Face checkpoints from a local folder (``config.json``, ``*.safetensors``, ``tokenizer.json``).

Nothing is fetched from a hub. Weights are read with ``safetensors`` only: pickle checkpoints
(``pytorch_model.bin``) are refused, since unpickling runs code. Supported ``model_type``s are the
keys of ``DECODERS``; each maps to a cache-contract implementation (``slmc.models.causal_lm``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from slmc.errors import ModelError
from slmc.ir import ModelSpec
from slmc.models import causal_lm
from slmc.models.llama import LlamaCausalLM, LlamaConfig
from slmc.tokenizer import HuggingFaceTokenizer

DEFAULT_MAX_CONTEXT = 2048


def _llama(config: dict[str, Any]) -> LlamaCausalLM:
    return LlamaCausalLM(LlamaConfig.from_hf(config))


DECODERS: dict[str, Callable[[dict[str, Any]], torch.nn.Module]] = {"llama": _llama, "qwen2": _llama}


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelError(f"{folder} is not a Hugging Face checkpoint folder: config.json is missing")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelError(f"{path} must hold a JSON object")
    return config


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
        hint = f" (found pickle checkpoints {pickles}: convert them to safetensors; slmc never unpickles weights)" if pickles else ""
        raise ModelError(f"{folder} has no *.safetensors weights{hint}")
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            weights.update(load_file(str(file)))
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"{file} is not a readable safetensors file: {exc}") from exc
    return weights


def load_hf_model(folder: str | Path, max_context: int | None = None) -> ModelSpec:
    """A ``ModelSpec`` (causal-LM contract, float32, eval mode) for the checkpoint in ``folder``."""
    folder = Path(folder)
    config = _read_config(folder)
    model_type = config.get("model_type")
    if model_type not in DECODERS:
        raise ModelError(f"{folder}: model_type {model_type!r} is not supported; supported: {', '.join(sorted(DECODERS))}")
    try:
        module = DECODERS[model_type](config)
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelError(f"{folder}/config.json: {type(exc).__name__}: {exc}") from exc
    weights = _read_weights(folder)
    if module.config.tie_word_embeddings:
        weights.setdefault("lm_head.weight", weights.get("model.embed_tokens.weight"))
    try:
        module.load_state_dict({k: v.float() for k, v in weights.items() if v is not None}, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{folder}: the weights do not match config.json: {str(exc).splitlines()[0]} "
                         f"{' '.join(str(exc).splitlines()[1:3])}") from exc
    module.eval()
    context = min(module.config.max_position_embeddings, max_context or DEFAULT_MAX_CONTEXT)
    cache = module.cache_spec(context)
    tokenizer_file = folder / "tokenizer.json"
    return ModelSpec(
        module=module,
        example_inputs=causal_lm.example_inputs(cache, vocab=module.config.vocab_size),
        dynamic_shapes=causal_lm.dynamic_shapes(cache),
        name=folder.name,
        input_names=causal_lm.INPUT_NAMES,
        output_names=causal_lm.OUTPUT_NAMES,
        description=f"{model_type} checkpoint from {folder}",
        task="causal-lm",
        kv_cache=cache,
        tokenizer=HuggingFaceTokenizer(tokenizer_file) if tokenizer_file.is_file() else None,
    )
