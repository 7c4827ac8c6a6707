"""Rejecting a model that cannot fit the target's memory (``memory.ram_bytes``), with the numbers.

The footprint is what the artifact must hold in RAM at the least: its weights, plus, for a causal
LM under the cache contract, the float32 KV cache of the shortest context slmc accepts
(``slmc.models.context_length.MIN_CONTEXT`` tokens and the sink slot); a longer context is then fitted to the
memory left (``slmc.models.context_length.fit_context``). Activations are not counted, so only models that
cannot run at all are rejected. Two checks, both before anything is lowered or built:

- ``check_loaded_model``, as soon as the model is loaded (before tracing and passes): the recipe's
  passes may still shrink the weights, so floating-point tensors are counted at the narrowest weight
  dtype the target executes (``dtypes.weights``), a lower bound for any recipe that does not
  delete weights;
- ``check_compiled_weights``, after the passes: the weights the artifact will actually store.
"""

from __future__ import annotations

from slmc.models.context_length import MIN_CONTEXT, kv_bytes_per_token, weight_bytes
from slmc.errors import ModelTooLargeError
from slmc.graph.ir import ModelSpec
from slmc.graph.kv_cache import KVCacheSpec
from slmc.spec.target import TargetDescriptor

DTYPE_BITS = {"float32": 32, "float16": 16, "bfloat16": 16, "int8": 8, "int4": 4}


def _kv_cache(cache: KVCacheSpec | None) -> tuple[int, str]:
    """Bytes of the KV cache at the shortest context, and a description with the full-context figure."""
    if cache is None:
        return 0, ""
    per_token = kv_bytes_per_token(cache)
    shortest = min(MIN_CONTEXT, cache.max_context)
    return (shortest + 1) * per_token, (
        f" + {(shortest + 1) * per_token:,} bytes of KV cache at the shortest context ({shortest} tokens; "
        f"{per_token:,} bytes per token, {(cache.max_context + 1) * per_token:,} at its max context of {cache.max_context})")


def _reject(name: str, target: TargetDescriptor, weights: str, weight_floor: int, cache: KVCacheSpec | None,
            parameter_bytes: int, advice: str) -> None:
    ram = int(target.memory.ram_bytes)
    kv, kv_text = _kv_cache(cache)
    if weight_floor + kv <= ram:
        return
    full_kv = (cache.max_context + 1) * kv_bytes_per_token(cache) if cache is not None else 0
    raise ModelTooLargeError(
        f"model '{name}' does not fit target '{target.name}': {weights}"
        f"{f'{kv_text} = {weight_floor + kv:,} bytes' if kv_text else ''}, "
        f"more than the target's {ram:,} bytes of RAM (memory.ram_bytes). {advice}",
        parameter_bytes, full_kv, ram,
    )


def narrowest_weight_bytes(spec: ModelSpec, target: TargetDescriptor) -> tuple[int, str]:
    """Bytes of the model's tensors with every floating-point one at the target's narrowest weight dtype."""
    dtype = min(target.dtypes.weights, key=lambda d: DTYPE_BITS[d])
    tensors = list(spec.module.parameters()) + list(spec.module.buffers())
    total = sum((t.numel() * DTYPE_BITS[dtype] + 7) // 8 if t.is_floating_point() else t.numel() * t.element_size()
                for t in tensors)
    return int(total), dtype


def check_loaded_model(spec: ModelSpec, target: TargetDescriptor) -> None:
    """Before tracing: ``ModelTooLargeError`` (exit 2) if even the narrowest weights the target executes do not fit."""
    loaded = weight_bytes(spec)
    floor, dtype = narrowest_weight_bytes(spec, target)
    weights = f"{loaded:,} bytes of parameters as loaded" + (
        f", at least {floor:,} at {dtype} (the narrowest weight dtype the target executes)" if floor < loaded else "")
    _reject(spec.name, target, weights, floor, spec.kv_cache, loaded,
            "Pick a smaller model or a target with more memory")


def check_compiled_weights(name: str, weight_bytes_: int, cache: KVCacheSpec | None, target: TargetDescriptor,
                           after_passes: bool = True) -> None:
    """Before lowering: ``ModelTooLargeError`` (exit 2) if the weights the artifact will store do not fit."""
    what = "after the recipe's passes" if after_passes else "as imported"
    _reject(name, target, f"{weight_bytes_:,} bytes of weights {what}", weight_bytes_, cache, weight_bytes_,
            "Compress the weights further (e.g. cast_weights to a narrower dtype the target executes), "
            "pick a smaller model, or a target with more memory" if after_passes else
            "Pick a smaller model or a target with more memory")

