"""Inputs and KV-cache specs that follow the graph, for passes that change a causal LM's cache shape.

Head pruning (``prune_channels`` with ``heads``) removes KV heads, so the compressed graph takes
``[L, 1, H_kv', P, D]`` caches while the original takes ``H_kv``. The cache spec of a graph is
read from its ``past_keys`` placeholder, never from the model config. A sample whose cache is the
empty cache (only the sink slot, ``P = 1``, which is never attended to: ``slmc.graph.kv_cache``)
means the same thing for any head count, so it is refitted with zeros; any other mismatch is an
error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from slmc.errors import InputError
from slmc.graph.ir import Graph
from slmc.graph.kv_cache import INPUT_NAMES, KVCacheSpec

CACHE_INPUTS = INPUT_NAMES[1:]  # past_keys, past_values


def _inputs(graph: Graph) -> list[tuple[str, tuple]]:
    placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
    return [(name, tuple(n.meta["val"].shape) if isinstance(n.meta.get("val"), torch.Tensor) else ())
            for n, name in zip(placeholders, graph.input_names)]


def graph_kv_cache(graph: Graph, cache: KVCacheSpec | None) -> KVCacheSpec | None:
    """``cache`` with the KV head count of ``graph``'s ``past_keys`` input (unchanged if it has none)."""
    if cache is None:
        return None
    shapes = dict(_inputs(graph))
    heads = shapes.get("past_keys", ())[2:3]
    if not heads or not isinstance(heads[0], int) or heads[0] == cache.kv_heads:
        return cache
    return replace(cache, kv_heads=int(heads[0]))


def fit_sample(graph: Graph, sample: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """``sample`` with empty caches re-shaped to the graph's head count; ``InputError`` if it cannot be."""
    fitted = list(sample)
    for index, ((name, shape), tensor) in enumerate(zip(_inputs(graph), sample)):
        if len(shape) != tensor.ndim:
            continue
        static = [(axis, int(d)) for axis, d in enumerate(shape) if isinstance(d, int)]
        if all(tensor.shape[axis] == d for axis, d in static):
            continue
        if name in CACHE_INPUTS and tensor.ndim == 5 and tensor.shape[3] == 1:
            size = list(tensor.shape)
            for axis, d in static:
                size[axis] = d
            fitted[index] = torch.zeros(size, dtype=tensor.dtype)
        else:
            raise InputError(f"input '{name}' of shape {list(tensor.shape)} does not fit the graph's {[str(d) for d in shape]}; "
                             "only the empty KV cache (the sink slot alone) can be refitted")
    return tuple(fitted)


def fit_samples(graph: Graph, samples: Sequence[tuple[torch.Tensor, ...]]) -> list[tuple[torch.Tensor, ...]]:
    return [fit_sample(graph, s) for s in samples]
