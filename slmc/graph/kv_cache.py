"""The causal-LM contract: one traced graph serves prefill and decode through an explicit KV cache.

Every causal LM slmc compiles (built-in or Hugging Face) is wrapped to this signature::

    inputs   input_ids    int64   [1, T]               T new tokens, 1 <= T <= max_context
             past_keys    float32 [L, 1, H_kv, P, D]   P cached positions, 1 <= P
             past_values  float32 [L, 1, H_kv, P, D]
    outputs  logits       float32 [1, T, V]
             keys         float32 [L, 1, H_kv, P + T, D]   past ++ new
             values       float32 [L, 1, H_kv, P + T, D]

Slot 0 of the cache is a *sink*: it is never attended to (masked with -inf), so a prompt is a
call with ``P = 1`` (the empty cache) and every later token a call with ``T = 1``. The new tokens
sit at positions ``P - 1 .. P + T - 2``. One graph (no zero-sized dims, which ``torch.export``
cannot keep dynamic) means every pass runs once and prefill and decode share the same weights.
Batch size is 1, as on a phone.

A cache may be *stored* in float16 (``KVCacheSpec.dtype``, the recipe's ``kv_cache``): each number rounded to
the nearest float16 as it is written, converted back to float32 as attention reads it. Or in int8: each key and value row
of ``D`` numbers at one (layer, head, position) is kept as int8 with one float32 scale, symmetric,
``scale = max|x| / 127``, ``q = round(x / scale)`` (the per-token, per-head granularity of KIVI's values and
of llama.cpp's q8_0 cache with one block per head; Liu et al., "KIVI", arXiv:2402.02750). The contract's
tensors stay float32; a stored-int8 cache holds ``quantize_rows(x)`` dequantized, which is what the
attention of the artifact's resident functions reads (``slmc.schedules.resident_kv``), and
``CopyDecoder`` rounds the cache a step returns the same way, so an eager model decodes over the same
cache values.

``KVCacheSpec`` is numpy only: ``slmc.load`` uses it without importing torch (issue 22); the
helpers that build or run torch tensors import torch when called.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from slmc.spec.kv_cache_dtype import KvCacheDtype

if TYPE_CHECKING:
    import torch

StepFunction = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
INPUT_NAMES = ("input_ids", "past_keys", "past_values")
OUTPUT_NAMES = ("logits", "keys", "values")
# The resident contract (slmc.schedules.resident_kv): the library function that appends to a cache it does not copy,
#   resident_all(input_ids [1, T], cache_keys [L, 1, H_kv, M, D], cache_values, past: Shape([P]), *weights) -> logits [1, T, V]
# writes the new keys/values at slots P .. P + T - 1 of the caches in place (M = max_context + 1, slot 0 the sink).
RESIDENT_ALL = "resident_all"
# The same with the logits of the last new token only, [1, 1, V] (generation), when the head could be isolated.
RESIDENT_LAST = "resident_last"
# resident_last with one new token (a decode step): static shapes but the past length (slmc.schedules.one_token).
RESIDENT_STEP = "resident_step"


INT8_LEVELS = 127.0  # symmetric: q in [-127, 127]


@dataclass(frozen=True)
class KVCacheSpec:
    """Shape of a model's KV cache, and the dtype its resident buffers store (``slmc.spec.kv_cache_dtype.KvCacheDtype``)."""

    layers: int
    kv_heads: int
    head_dim: int
    max_context: int
    dtype: KvCacheDtype = "float32"

    @property
    def quantized(self) -> bool:
        """Stored as int8 codes with a float32 scale per (layer, head, position)."""
        return self.dtype == "int8"

    @property
    def narrowed(self) -> bool:
        """Stored in another dtype than the contract's float32 (float16 or int8): only the resident contract
        stores it so, and a copy-contract cache is rounded as stored (``round_stored``)."""
        return self.dtype != "float32"

    def bytes_per_token(self) -> int:
        """Bytes one token adds to the stored cache: keys and values, plus one float32 scale per
        (layer, head) row when stored in int8."""
        rows = 2 * self.layers * self.kv_heads
        return rows * (self.head_dim + 4) if self.quantized else rows * self.head_dim * np.dtype(self.dtype).itemsize

    def empty(self) -> tuple[np.ndarray, np.ndarray]:
        """The cache before the first token: only the sink slot."""
        shape = (self.layers, 1, self.kv_heads, 1, self.head_dim)
        return np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=np.float32)

    def to_json(self) -> dict[str, int]:
        """The shape fields (the stored dtype is the manifest's ``kv_cache.dtype``)."""
        return {"layers": self.layers, "kv_heads": self.kv_heads, "head_dim": self.head_dim, "max_context": self.max_context}


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(q int8 [..., D], scale float32 [...])`` with ``x ~ q * scale``: symmetric per row of the last axis,
    ``scale = max|x| / 127``, ``q = round(x / scale)`` (half to even, as the resident kernels round); a row of
    zeros has scale 0 and ``q = 0``."""
    x = np.asarray(x, dtype=np.float32)
    scale = (np.abs(x).max(axis=-1) / np.float32(INT8_LEVELS)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1.0))
    q = np.clip(np.rint(x / safe[..., None]), -INT8_LEVELS, INT8_LEVELS).astype(np.int8)
    return q, scale


def dequantize_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * scale[..., None]


def round_stored(cache: KVCacheSpec, x: np.ndarray) -> np.ndarray:
    """``x`` as the cache stores it: unchanged for float32, rounded to the nearest float16 for float16,
    quantized and dequantized for int8."""
    if cache.quantized:
        return dequantize_rows(*quantize_rows(x))
    return np.asarray(x, dtype=cache.dtype).astype(np.float32) if cache.narrowed else x


def example_inputs(cache: KVCacheSpec, tokens: int = 8, past: int = 4, vocab: int = 256, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Example inputs for tracing: sizes above 1 so that ``torch.export`` keeps both dims symbolic."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    shape = (cache.layers, 1, cache.kv_heads, past, cache.head_dim)
    return (
        torch.randint(0, vocab, (1, tokens), generator=gen),
        torch.randn(shape, generator=gen) * 0.5,
        torch.randn(shape, generator=gen) * 0.5,
    )


def dynamic_shapes(cache: KVCacheSpec) -> tuple[dict[int, torch.export.Dim], ...]:
    import torch

    tokens = torch.export.Dim("tokens", min=1, max=cache.max_context)
    past = torch.export.Dim("past", min=1, max=cache.max_context)
    return ({1: tokens}, {3: past}, {3: past})


def sink_causal_mask(new_tokens: int, past: int, device: torch.device | None = None) -> torch.Tensor:
    """``[T, P + T]`` additive mask: 0 where query i may attend key j, -inf elsewhere (and at the sink)."""
    import torch

    key_pos = torch.arange(past + new_tokens, device=device)
    query_pos = torch.arange(new_tokens, device=device) + past
    allowed = (key_pos >= 1).unsqueeze(0) & (key_pos.unsqueeze(0) <= query_pos.unsqueeze(1))
    return torch.where(allowed, 0.0, float("-inf"))


def eager_step(module: torch.nn.Module) -> StepFunction:
    """A step function running a cache-contract module eagerly on numpy arrays."""
    import torch


    def step(ids: np.ndarray, keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with torch.no_grad():
            logits, k, v = module(torch.from_numpy(ids), torch.from_numpy(keys), torch.from_numpy(values))
        return logits.numpy(), k.numpy(), v.numpy()

    return step


@runtime_checkable
class Decoder(Protocol):
    """A model with its own KV cache: ``reset()`` empties it, ``feed(ids [1, T])`` appends ``T`` tokens
    and returns their logits ``[1, T, V]`` (``last_only``: ``[1, 1, V]``, the last token's, which a model
    may compute alone). An artifact of the resident contract is one without copies
    (``slmc.artifact.runtime.CompiledModel.decoder``); ``CopyDecoder`` makes one of a step function."""

    cache: KVCacheSpec

    def reset(self) -> None: ...

    def feed(self, ids: np.ndarray, last_only: bool = False) -> np.ndarray: ...


class CopyDecoder:
    """A ``Decoder`` over a step function of the copy contract: it holds the cache the step returned, with the
    new positions rounded as ``cache.dtype`` stores them (``round_stored``). For int8 this is the eager model
    over the same cache as the artifact's, but for one difference: within a step the new tokens attend to
    their own keys and values unrounded (the artifact's kernels read them back rounded)."""

    def __init__(self, step: StepFunction, cache: KVCacheSpec):
        self.step, self.cache = step, cache
        self.reset()

    def reset(self) -> None:
        self.keys, self.values = self.cache.empty()

    def feed(self, ids: np.ndarray, last_only: bool = False) -> np.ndarray:
        past = self.keys.shape[3]
        logits, keys, values = self.step(ids, self.keys, self.values)
        if self.cache.narrowed:
            keys, values = keys.copy(), values.copy()
            keys[:, :, :, past:] = round_stored(self.cache, keys[:, :, :, past:])
            values[:, :, :, past:] = round_stored(self.cache, values[:, :, :, past:])
        self.keys, self.values = keys, values
        return logits[:, -1:] if last_only else logits


def as_decoder(step: StepFunction | Decoder, cache: KVCacheSpec) -> Decoder:
    """``step`` itself when it is a ``Decoder``, else a ``CopyDecoder`` over it."""
    return step if isinstance(step, Decoder) else CopyDecoder(step, cache)


def prompt_logits(step: StepFunction | Decoder, cache: KVCacheSpec, ids: np.ndarray) -> np.ndarray:
    """Logits ``[T, V]`` of a whole prompt in one prefill call from the empty cache."""
    decoder = as_decoder(step, cache)
    decoder.reset()
    return decoder.feed(ids.reshape(1, -1).astype(np.int64))[0]


@dataclass
class Generation:
    tokens: list[int]
    step_logits: list[np.ndarray]


def generate_greedy(step: StepFunction | Decoder, cache: KVCacheSpec, prompt: list[int], max_new_tokens: int,
                    stop_token: int | None = None, forced: Sequence[int] | None = None) -> Generation:
    """Greedy decoding: one prefill call for the prompt, then one decode call per new token.

    ``forced`` (teacher forcing): feed these tokens instead of the model's own choices, so that the
    logits at every step follow another model's history; ``tokens`` still records the model's own
    greedy choice (argmax) at each step. Raises ``ValueError`` when the prompt is empty, prompt + new
    tokens exceed ``max_context``, or ``forced`` is shorter than ``max_new_tokens - 1`` (its last token is never fed).
    """
    if forced is not None and len(forced) < max_new_tokens - 1:
        raise ValueError(f"forced holds {len(forced)} tokens; {max_new_tokens} new tokens feed {max_new_tokens - 1}")
    if not prompt:
        raise ValueError("the prompt encodes to no tokens")
    if len(prompt) + max_new_tokens > cache.max_context:
        raise ValueError(f"prompt ({len(prompt)} tokens) + {max_new_tokens} new tokens exceed max_context {cache.max_context}")
    decoder = as_decoder(step, cache)
    decoder.reset()
    logits = decoder.feed(np.asarray([prompt], dtype=np.int64), last_only=True)
    tokens: list[int] = []
    step_logits = [logits[0, -1].copy()]
    for _ in range(max_new_tokens):
        token = int(np.argmax(step_logits[-1]))
        tokens.append(token)
        fed = token if forced is None or len(tokens) == max_new_tokens else int(forced[len(tokens) - 1])
        if fed == stop_token or len(tokens) == max_new_tokens:
            break
        logits = decoder.feed(np.asarray([[fed]], dtype=np.int64), last_only=True)
        step_logits.append(logits[0, -1].copy())  # a decoder may reuse its output buffer
    return Generation(tokens, step_logits)
