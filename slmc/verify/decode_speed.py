"""A brief decode-speed measurement: greedy tokens/s of the original eager model and of the artifact.

Measured on the compiling host, only when the artifact runs natively (an RPC device's timing would
include the network; an artifact that does not run here is not timed at all). It is one short run
(``NEW_TOKENS`` tokens after a ``PROMPT_TOKENS``-token prompt, best of ``REPEATS``) on a machine that
may be busy: an indication for the compile summary, not a benchmark (``slmc bench`` is that).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from slmc.artifact.manifest import DecodeSpeed
from slmc.artifact.tvm_runtime import tvm_threads
from slmc.graph.kv_cache import Decoder, KVCacheSpec, StepFunction, as_decoder, generate_greedy

PROMPT_TOKENS = 16
NEW_TOKENS = 32
REPEATS = 2


def _tokens_per_second(step: StepFunction | Decoder, cache: KVCacheSpec, prompt: list[int], new_tokens: int) -> float:
    """Best of ``REPEATS`` greedy runs: decode tokens per second, the prefill call excluded."""
    best = float("inf")
    decoder = as_decoder(step, cache)
    for _ in range(REPEATS):
        decoder.reset()
        decoder.feed(np.asarray([prompt], dtype=np.int64), last_only=True)
        token = np.asarray([[prompt[-1]]], dtype=np.int64)
        start = time.perf_counter()
        for _ in range(new_tokens):
            logits = decoder.feed(token, last_only=True)
            token = np.asarray([[int(np.argmax(logits[0, -1]))]], dtype=np.int64)
        best = min(best, time.perf_counter() - start)
    return new_tokens / best


def _single_threaded(measure: Callable[[], float]) -> float:
    """``measure()`` with PyTorch on one thread: its OpenMP pool spins, and on shared cores one eager
    decode step measured 50x slower with 2 threads than with 1 (650 ms vs 13 ms, fixture-lm, load 8)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return measure()
    finally:
        torch.set_num_threads(threads)


def measure_decode_speed(artifact_step: StepFunction | Decoder, artifact_cache: KVCacheSpec, original_step: StepFunction,
                         original_cache: KVCacheSpec, vocab: int) -> DecodeSpeed:
    """Decode tokens/s of both; a context too short for the measurement gives ``measured`` false.

    Precondition: both step functions follow the causal-LM cache contract (slmc.graph.kv_cache).
    """
    room = min(artifact_cache.max_context, original_cache.max_context)
    prompt_tokens, new_tokens = min(PROMPT_TOKENS, room // 2), min(NEW_TOKENS, room - min(PROMPT_TOKENS, room // 2))
    if prompt_tokens < 1 or new_tokens < 1:
        return DecodeSpeed(measured=False, reason=f"max_context {room} leaves no room to decode")
    prompt = [int(i) for i in np.random.default_rng(0).integers(0, vocab, prompt_tokens)]
    generate_greedy(artifact_step, artifact_cache, prompt, 1)  # warm-up: first calls allocate
    return DecodeSpeed(
        measured=True, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
        how=(f"greedy decode of {new_tokens} tokens after a {prompt_tokens}-token prompt, one call per token, batch 1, "
             f"best of {REPEATS}, on this host: eager PyTorch on 1 thread vs the artifact through slmc.load on "
             f"{tvm_threads()} TVM thread(s); a brief measurement"),
        original_tokens_per_s=round(_single_threaded(lambda: _tokens_per_second(original_step, original_cache, prompt, new_tokens)), 1),
        artifact_tokens_per_s=round(_tokens_per_second(artifact_step, artifact_cache, prompt, new_tokens), 1),
    )


def not_measured(reason: str) -> DecodeSpeed:
    return DecodeSpeed(measured=False, reason=reason)
