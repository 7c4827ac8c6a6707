"""The KV cache of an artifact of the resident contract: allocated once, appended to in place.

The library's ``resident_all`` (``slmc.graph.kv_cache.RESIDENT_ALL``, built by
``slmc.schedules.resident_kv``; ``resident_last`` the same for the last token's logits) takes the caches ``[L, 1, H_kv, max_context + 1, D]`` and the number
of slots in use ``P`` (the sink slot 0 included), writes the new tokens' keys and values at slots
``P .. P + T - 1`` and returns their logits. ``ResidentCache`` owns both buffers: a step allocates
nothing that grows with the context, and the buffers' shape never changes (TVM's pooled allocator
reuses every intermediate), so the process does not grow token after token.

A cache stored in float16 (``KVCacheSpec.dtype``, the manifest's ``kv_cache.dtype``) holds float16 buffers of
that shape; the library rounds as it writes and widens as attention reads. One stored in int8 holds int8 buffers of
that shape and their float32 scales ``[L, 1, H_kv, max_context + 1]``, passed after the caches; the library
quantizes as it writes and dequantizes as attention reads (``slmc.schedules.resident_kv``).

The buffers start as zeros: slot 0 (the sink) is read by attention with probability 0, and 0 x NaN of
uninitialised memory would poison every score. They are anonymous mappings (``slmc.artifact.kv_pages.ZeroPages``):
the pages of slots not yet written are the system's zero pages, 4 KB each, so resident memory follows the
context in use; a call whose context fills about all of the 2 MB pages huge pages would make resident asks for
them (``plan``: cheaper cache reads at long contexts), as the native runner does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from slmc.artifact.kv_pages import ZeroPages
from slmc.artifact.tvm_runtime import aligned_empty, as_local_tensor, tvm_ffi, use_physical_cores
from slmc.artifact.vm_pool import release_vm_pool
from slmc.errors import InputError
from slmc.graph.kv_cache import KVCacheSpec, dequantize_rows, quantize_rows

# Tokens per call of a long prompt (``ResidentCache.feed``); the native runner (slmc/native/runtime/session.cpp,
# kPrefillChunk) uses the same. Half llama.cpp's default micro-batch (n_ubatch 512): the chunk's intermediates
# stay in TVM's pool, and 256 rows keep slmc-run's peak 12 MiB lower at no prefill cost (SmolLM-135M shape,
# 1,024-token prompt: 410 vs 390 tok/s, alternated, docs/dev-notes.md session 9).
PREFILL_CHUNK = 256


class ResidentCache:
    """A ``slmc.graph.kv_cache.Decoder`` over ``function`` (the library's ``resident_all``)."""

    def __init__(self, function: Any, last: Any | None, weights: list[Any], cache: KVCacheSpec, step: Any | None = None):
        self.cache = cache
        self._function, self._last, self._weights = function, last, weights
        self._step = step  # resident_step: one new token on static shapes (slmc.schedules.one_token), when built
        rows = (cache.layers, 1, cache.kv_heads, cache.max_context + 1)
        # page-aligned mappings numpy views; TVM's tensors view those (slmc.artifact.tvm_runtime)
        self._pages = [ZeroPages((*rows, cache.head_dim), np.dtype(cache.dtype)) for _ in range(2)]
        # an int8 cache's scales, one per (layer, head, slot); the library takes them after the caches
        self._pages += [ZeroPages(rows, np.dtype(np.float32)) for _ in range(2)] if cache.quantized else []
        self._keys_host, self._values_host = self._pages[0].array, self._pages[1].array
        self.keys, self.values = as_local_tensor(self._keys_host), as_local_tensor(self._values_host)
        self._scales_host = [p.array for p in self._pages[2:]]
        self.scales = [as_local_tensor(s) for s in self._scales_host]  # keys', values' (int8 only)
        self._caches = [self.keys, self.values, *self.scales]
        self._token_host = aligned_empty((1, 1), np.int64, zeroed=True)  # a decode step's id, reused
        self._token = as_local_tensor(self._token_host)
        self._shape = tvm_ffi().Shape
        self.length = 1  # slots in use: the sink

    @property
    def huge_pages(self) -> bool:
        """Whether the keys and values ask for transparent huge pages (``plan``)."""
        return self._pages[0].huge_pages and self._pages[1].huge_pages

    def plan(self, tokens: int) -> None:
        """Ask for huge pages when a generation whose cache will hold ``tokens`` tokens makes about those slots
        resident with them (``slmc.artifact.kv_pages``); never taken back. ``feed`` plans its own call when it
        appends more than one token (a decode step does not re-plan); a caller
        that knows the generation's length (prompt + new tokens) plans it first."""
        if not self.huge_pages:
            for pages in self._pages:
                pages.advise_huge_pages_for(min(tokens, self.cache.max_context) + 1)  # the sink slot included

    @property
    def tokens(self) -> int:
        """Tokens cached (the sink not counted)."""
        return self.length - 1

    def reset(self) -> None:
        """Forget every cached token (slots past the sink are overwritten before they are read again)."""
        self.length = 1

    def truncate(self, tokens: int) -> None:
        """Keep the first ``tokens`` cached tokens and forget the rest (e.g. to time a step at one context)."""
        if not 0 <= tokens <= self.tokens:
            raise InputError(f"cannot keep {tokens} tokens of a cache holding {self.tokens}")
        self.length = tokens + 1

    def feed(self, ids: np.ndarray, last_only: bool = False) -> np.ndarray:
        """Append ``ids`` (int64 ``[1, T]``) and return their logits ``[1, T, V]`` (a view of TVM's output
        when one call computed them); ``last_only``: ``[1, 1, V]``, computed alone by the library's
        ``resident_last`` when it has one; one token by its ``resident_step`` when it has one (the same
        logits, static shapes: a cheaper call). A prompt longer than ``PREFILL_CHUNK`` runs as calls of at
        most that many tokens (chunked prefill): the VM's pooled allocator keeps the pages of the largest
        call's intermediates until the prompt is cached, so the chunk, not the prompt, bounds them; then they
        are released (``slmc.artifact.vm_pool``: a decode step never reuses their sizes)."""
        use_physical_cores()  # this thread's TVM pool (per thread in TVM; returns at once once sized)
        count = ids.shape[1]
        if count < 1 or self.tokens + count > self.cache.max_context:
            raise InputError(f"{self.tokens} cached + {count} new tokens exceed the artifact's max_context "
                             f"{self.cache.max_context} (or no token given)")
        if count == 1:
            return self._call(ids, last_only)
        self.plan(self.tokens + count)  # a prompt plans its pages; a decode step does not (generate plans up front)
        logits = self._prompt(ids, last_only)
        release_vm_pool()  # its intermediates: the steps never reuse their sizes (slmc.artifact.vm_pool)
        return logits

    def _prompt(self, ids: np.ndarray, last_only: bool) -> np.ndarray:
        count = ids.shape[1]
        if count <= PREFILL_CHUNK:
            return self._call(ids, last_only)
        starts = range(0, count, PREFILL_CHUNK)
        if last_only:
            for start in starts[:-1]:
                self._call(ids[:, start:start + PREFILL_CHUNK], True)
            return self._call(ids[:, starts[-1]:], True)
        return np.concatenate([self._call(ids[:, s:s + PREFILL_CHUNK], False) for s in starts], axis=1)

    def _call(self, ids: np.ndarray, last_only: bool) -> np.ndarray:
        count = ids.shape[1]
        if count == 1:
            self._token_host[...] = ids
            tokens = self._token
        else:
            tokens = as_local_tensor(np.ascontiguousarray(ids, dtype=np.int64))
        function = self._last if last_only and self._last is not None else self._function
        if count == 1 and self._step is not None:  # one token: its last logits are all its logits
            function = self._step
        logits = np.from_dlpack(function(tokens, *self._caches, self._shape((self.length,)), *self._weights))
        self.length += count
        return logits[:, -1:] if last_only else logits

    def load(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Replace the cache by a copy-contract cache ``[L, 1, H_kv, P, D]`` (the sink included; a float16 cache
        stores it rounded to nearest, an int8 cache quantized)."""
        past = keys.shape[3]
        if past < 1 or past - 1 > self.cache.max_context:
            raise InputError(f"a cache of {past} slots does not fit max_context {self.cache.max_context} + the sink")
        for index, (host, given) in enumerate(((self._keys_host, keys), (self._values_host, values))):
            if self.cache.quantized:
                host[:, :, :, :past], self._scales_host[index][:, :, :, :past] = quantize_rows(given)
            else:
                host[:, :, :, :past] = given
        self.length = past

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the slots in use, as the copy contract returns them (float32: a float16 cache widened, an
        int8 cache dequantized)."""
        used = slice(0, self.length)
        if self.cache.quantized:
            return tuple(dequantize_rows(host[:, :, :, used], scales[:, :, :, used])
                         for host, scales in zip((self._keys_host, self._values_host), self._scales_host))
        return (self._keys_host[:, :, :, used].astype(np.float32), self._values_host[:, :, :, used].astype(np.float32))

