"""The longest context a causal-LM artifact accepts: from the recipe, the model and the target's memory.

The KV cache of a causal LM under slmc's cache contract holds ``2 x layers x kv_heads x head_dim``
float32 values per token (plus one sink slot). The context is the smallest of

- what the model supports (``KVCacheSpec.max_context`` as loaded, e.g. ``max_position_embeddings``),
- the recipe's ``max_context``, if set,
- what the target's KV-cache memory holds: ``memory.kv_cache_bytes`` if the descriptor sets it,
  else half of the RAM left after the weights.

A recipe ``max_context`` that the target's memory cannot hold is an error (exit 2) with the numbers.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from slmc.errors import InputError
from slmc.graph.ir import ModelSpec
from slmc.graph import kv_cache
from slmc.graph.kv_cache import KVCacheSpec
from slmc.spec.recipe import Recipe
from slmc.spec.target import TargetDescriptor

MIN_CONTEXT = 16


def kv_bytes_per_token(cache: KVCacheSpec) -> int:
    """Bytes one token adds to the KV cache as stored (keys and values, float32; int8 with their scales)."""
    return cache.bytes_per_token()


def weight_bytes(spec: ModelSpec) -> int:
    """Bytes of the model's parameters and buffers as loaded."""
    tensors = list(spec.module.parameters()) + list(spec.module.buffers())
    return int(sum(t.numel() * t.element_size() for t in tensors))


def kv_budget(spec: ModelSpec, target: TargetDescriptor) -> tuple[int, str]:
    """Bytes the KV cache may take on ``target``, and where that figure comes from."""
    if target.memory.kv_cache_bytes is not None:
        return int(target.memory.kv_cache_bytes), f"target '{target.name}' memory.kv_cache_bytes"
    ram = int(target.memory.ram_bytes)
    left = max(ram - weight_bytes(spec), 0)
    return left // 2, f"half of target '{target.name}' RAM ({ram:,} bytes) left after {weight_bytes(spec):,} bytes of weights"


def fit_context(spec: ModelSpec, recipe: Recipe, target: TargetDescriptor) -> dict[str, Any] | None:
    """Set ``spec``'s context to the limit described in the module docstring; return how it was chosen.

    Returns ``None`` for models without a KV cache. Raises ``InputError`` when the recipe's
    ``max_context`` exceeds what the model supports or what the target's memory holds, or when
    not even ``MIN_CONTEXT`` tokens fit.
    """
    cache = spec.kv_cache
    if cache is None:
        return None
    per_token = kv_bytes_per_token(replace(cache, dtype=recipe.kv_cache.dtype))  # as the recipe stores it
    budget, budget_source = kv_budget(spec, target)
    memory_limit = budget // per_token - 1  # one slot is the sink
    requested = recipe.document.max_context
    where = f"{recipe.source}: max_context"
    if requested is not None and requested > cache.max_context:
        raise InputError(f"{where} {requested} exceeds what model '{spec.name}' supports ({cache.max_context} tokens)")
    if requested is not None and requested > memory_limit:
        raise InputError(f"{where} {requested} needs {(requested + 1) * per_token:,} bytes of KV cache "
                         f"({per_token:,} per token); {budget_source} allows {budget:,} bytes = {memory_limit} tokens")
    if memory_limit < MIN_CONTEXT:
        raise InputError(f"model '{spec.name}': {budget_source} allows {budget:,} bytes of KV cache, fewer than "
                         f"{MIN_CONTEXT} tokens at {per_token:,} bytes per token")
    limits = {"model": cache.max_context, "target_memory": memory_limit}
    if requested is not None:
        limits["recipe"] = requested
    chosen = min(limits.values())
    if chosen < cache.max_context:
        set_context(spec, chosen)
    decided_by = sorted(name for name, value in limits.items() if value == chosen)
    return {"max_context": chosen, "limits": limits, "decided_by": decided_by,
            "kv_bytes_per_token": per_token, "kv_budget_bytes": budget, "kv_budget_source": budget_source}


def set_context(spec: ModelSpec, max_context: int) -> None:
    """Lower a cache-contract model's context to ``max_context`` (dynamic-shape bounds and cache spec)."""
    cache = replace(spec.kv_cache, max_context=max_context)
    spec.kv_cache = cache
    spec.dynamic_shapes = kv_cache.dynamic_shapes(cache)
