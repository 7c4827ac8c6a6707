"""Which transformers class builds a decoder checkpoint, and whether slmc's cache contract can hold it.

Support is by capability, not by a list of ``model_type`` values: any decoder-only class of the
installed transformers that ``AutoModelForCausalLM`` maps the folder's ``model_type`` to (or that
``config.json``'s ``architectures`` names) is attempted. What is refused is refused for what the
model is, before any long work starts, with a ``ModelError`` naming the thing and why:

* ``auto_map`` in ``config.json`` (a ``trust_remote_code`` model): slmc runs transformers' own
  modeling code only, never code shipped in a checkpoint folder;
* encoder-decoder models (T5, BART, ...) and ``model_type`` values without a causal-LM class;
* layer types other than full and sliding-window attention (linear attention, state-space or
  convolution layers of hybrid models keep a state that is not a key/value cache);
* a model whose forward does not fill a key/value cache the contract can read back: checked by
  one eager step of the wrapper on two tokens (``check_cache_contract``), which names the
  innermost transformers module the step failed in.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slmc.errors import ModelError
from slmc.graph.kv_cache import KVCacheSpec

# Attention layer types whose cache is a key/value tensor pair per layer (sliding windows become masks).
KV_LAYER_TYPES = ("full_attention", "sliding_attention")
_CLASS_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def causal_lm_class(config: dict[str, Any], folder: Path) -> str:
    """The transformers class name for the decoder checkpoint whose ``config.json`` is ``config``: the first
    ``*ForCausalLM``/``*LMHeadModel`` of ``architectures`` built for its ``model_type``, else the class
    ``AutoModelForCausalLM`` maps ``model_type`` to; a ``ModelError`` when there is none."""
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)

    model_type = config.get("model_type")
    if "auto_map" in config:
        raise ModelError(f"{folder}: config.json 'auto_map' names custom modeling code ({sorted(config['auto_map'])}), "
                         "a trust_remote_code model: slmc runs transformers' own modeling code only, never code "
                         "shipped in a checkpoint folder")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING_NAMES:
        raise ModelError(f"{folder}: model_type {model_type!r} is unknown to transformers {transformers.__version__}")
    if config.get("is_encoder_decoder") or model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        raise ModelError(f"{folder}: model_type {model_type!r} is an encoder-decoder model; slmc compiles decoder-only "
                         "causal LMs (and BERT-style sentence encoders)")
    named = [a for a in config.get("architectures") or () if isinstance(a, str) and a.endswith(_CLASS_SUFFIXES)
             and getattr(getattr(getattr(transformers, a, None), "config_class", None), "model_type", None) == model_type]
    class_name = named[0] if named else MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    if class_name is None:
        raise ModelError(f"{folder}: model_type {model_type!r} has no causal-LM class in transformers "
                         f"{transformers.__version__} (AutoModelForCausalLM does not map it); slmc compiles "
                         "decoder-only causal LMs")
    return class_name


def check_layer_types(config: Any, folder: Path) -> None:
    """Every layer must keep a key/value cache (``KV_LAYER_TYPES``)."""
    layer_types = list(getattr(config, "layer_types", None) or ())
    other = sorted({t for t in layer_types if t not in KV_LAYER_TYPES})
    if other:
        layers = [i for i, t in enumerate(layer_types) if t in other]
        raise ModelError(f"{folder}: layers {layers} are {', '.join(other)} layers; slmc's cache contract holds "
                         f"key/value caches only ({', '.join(KV_LAYER_TYPES)})")


def check_cache_contract(module: nn.Module, cache: KVCacheSpec, vocab: int, folder: Path) -> None:
    """One eager step of ``module`` (an ``HFCausalLM``) on two tokens over the empty cache: it must run and
    return ``[L, 1, H_kv, 3, D]`` keys and values; else a ``ModelError`` naming the module that failed."""
    keys, values = (torch.from_numpy(t) for t in cache.empty())
    ids = torch.zeros(1, 2, dtype=torch.int64).clamp(max=vocab - 1)
    try:
        with torch.no_grad():
            logits, new_keys, new_values = module(ids, keys, values)
    except (RuntimeError, ValueError, TypeError, AttributeError, IndexError, KeyError, NotImplementedError) as exc:
        raise ModelError(f"{folder}: the model does not run under slmc's key/value cache contract: "
                         f"{_where(exc)}{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    expected = (cache.layers, 1, cache.kv_heads, keys.shape[3] + 2, cache.head_dim)
    for name, got in (("keys", new_keys), ("values", new_values)):
        if tuple(got.shape) != expected:
            raise ModelError(f"{folder}: after one step the cache {name} are {list(got.shape)}, not {list(expected)} "
                             "([layers, 1, kv_heads, past + tokens, head_dim] from config.json): the model keeps a "
                             "cache slmc's contract cannot hold")
    if tuple(logits.shape[:2]) != (1, 2):
        raise ModelError(f"{folder}: logits are {list(logits.shape)} for 2 tokens, not [1, 2, vocab]")


def _where(exc: BaseException) -> str:
    """``in transformers/models/gemma3/modeling_gemma3.py:123 (forward): `` for the innermost transformers frame."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "transformers" in f.filename]
    if not frames:
        return ""
    frame = frames[-1]
    path = frame.filename[frame.filename.rfind("transformers"):]
    return f"in {path}:{frame.lineno} ({frame.name}): "
