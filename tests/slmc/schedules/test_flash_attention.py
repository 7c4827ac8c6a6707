"""The tiled attention kernel (slmc.schedules.flash_attention) against numpy, and what it allocates."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import tvm

from slmc.graph.kv_cache import sink_causal_mask
from slmc.schedules import cpu_params
from slmc.schedules.fast_exp import fast_exp_pass
from slmc.schedules.flash_attention import (BLOCK_K, BLOCK_Q, MAX_SPLITS, SPLIT_KEYS, FlashShape, decode_attention_func,
                                          flash_attention_func)

# slots for the split decode form (2 x SPLIT_KEYS keys and more), up to MAX_SPLITS key ranges with an empty last one
SHAPE = FlashShape(heads=6, kv_heads=2, depth=32, slots=4200, layers=3, layer=1, scale=32 ** -0.5, mask_rank=4)
# one query row: serial below 2 x SPLIT_KEYS keys, split from there (4 ranges at 1,050 keys; at 4,129 keys 16 ranges
# of 9 key blocks for 130 blocks, so the last range has none)
DECODE_PASTS = [2 * SPLIT_KEYS - 2, 2 * SPLIT_KEYS - 1, 1049, 16 * 256 + 32]


def _reference(q: np.ndarray, keys: np.ndarray, values: np.ndarray, mask: np.ndarray, shape: FlashShape) -> np.ndarray:
    group = shape.heads // shape.kv_heads
    n = mask.shape[-1]
    k = np.repeat(keys[shape.layer, 0, :, :n], group, axis=0)
    v = np.repeat(values[shape.layer, 0, :, :n], group, axis=0)
    scores = np.einsum("hmd,hnd->hmn", q.astype(np.float64), k) * shape.scale + mask.reshape(mask.shape[-2:])
    scores -= scores.max(-1, keepdims=True)
    probs = np.exp(scores)
    return np.einsum("hmn,hnd->hmd", probs / probs.sum(-1, keepdims=True), v)


def _compiled(host_target, shape: FlashShape):
    params = cpu_params(host_target)
    if shape.depth % params.lanes:
        pytest.skip(f"head size {shape.depth} is not a multiple of this host's {params.lanes} lanes")
    func = flash_attention_func(shape, params.lanes)
    module = fast_exp_pass(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}))  # as in the CPU pipeline
    return func, tvm.compile(module, target=host_target.tvm_target())["main"]


@pytest.fixture(scope="module")
def kernel(host_target):
    return _compiled(host_target, SHAPE)


@pytest.fixture(scope="module")
def int8_kernel(host_target):
    return _compiled(host_target, replace(SHAPE, cache_dtype="int8"))[1]


@pytest.mark.parametrize("past, tokens", [(1, 1), (57, 1), (1, 37), (40, 2 * BLOCK_Q + 3), (1, 130),
                                         *((past, 1) for past in DECODE_PASTS)])
def test_tiled_attention_equals_softmax_attention(kernel, past, tokens):
    _attend_over_a_float_cache(kernel[1], np.float32, np.random.default_rng(past * 1000 + tokens), past, tokens)


def _attend_over_a_float_cache(run, dtype, rng, past: int, tokens: int) -> None:
    """``run`` over a random cache stored as ``dtype`` against the float64 attention over the stored values."""
    cache_shape = (SHAPE.layers, 1, SHAPE.kv_heads, SHAPE.slots, SHAPE.depth)
    keys, values = (rng.standard_normal(cache_shape).astype(dtype) for _ in range(2))
    q = rng.standard_normal((SHAPE.heads, tokens, SHAPE.depth)).astype(np.float32)
    mask = sink_causal_mask(tokens, past).numpy()[None, None].astype(np.float32)
    out = tvm.runtime.tensor(np.zeros((SHAPE.heads, tokens, SHAPE.depth), np.float32))
    run(*(tvm.runtime.tensor(a) for a in (q, keys, values, mask)), out)
    want = _reference(q, keys.astype(np.float64), values.astype(np.float64), mask, SHAPE)
    # measured on AVX-512 (session 11, 1 and 2 TVM threads alike): max abs error 4.6e-7 over the float32 cases
    # (prefill; the long decodes, 511 to 4,129 keys, 1.8e-7 and less), 3.4e-7 over the float16 ones (online softmax rescaling,
    # the polynomial exp, float32 sums; the reference is float64)
    np.testing.assert_allclose(out.numpy(), want, rtol=0, atol=5e-6)


@pytest.mark.parametrize("past, tokens", [(1, 1), (70, 1), (40, 2 * BLOCK_Q + 3), (1049, 1), (16 * 256 + 32, 1)])
def test_the_int8_cache_kernel_attends_over_the_dequantized_cache(int8_kernel, past, tokens):
    """Codes times their row's scale, the scale applied once per score and folded into the probabilities for
    the values: the same attention as over ``codes * scale`` in float64, up to float32 rounding."""
    rng = np.random.default_rng(past * 1000 + tokens + 7)
    cache_shape = (SHAPE.layers, 1, SHAPE.kv_heads, SHAPE.slots, SHAPE.depth)
    k8, v8 = (rng.integers(-127, 128, cache_shape).astype(np.int8) for _ in range(2))
    ks, vs = (rng.uniform(0.01, 0.05, cache_shape[:-1]).astype(np.float32) for _ in range(2))
    q = rng.standard_normal((SHAPE.heads, tokens, SHAPE.depth)).astype(np.float32)
    mask = sink_causal_mask(tokens, past).numpy()[None, None].astype(np.float32)
    out = tvm.runtime.tensor(np.zeros((SHAPE.heads, tokens, SHAPE.depth), np.float32))
    int8_kernel(*(tvm.runtime.tensor(a) for a in (q, k8, v8, ks, vs, mask)), out)
    want = _reference(q, k8 * ks[..., None].astype(np.float64), v8 * vs[..., None].astype(np.float64), mask, SHAPE)
    # values up to 127 x 0.05: measured on AVX-512 5.3e-6 largest error (1.5e-6 relative, outputs up to 3.5; prefill
    # at 40 + 35), float32 rounding
    np.testing.assert_allclose(out.numpy(), want, rtol=2e-6, atol=5e-6)


@pytest.fixture(scope="module")
def float16_kernel(host_target):
    return _compiled(host_target, replace(SHAPE, cache_dtype="float16"))[1]


@pytest.mark.parametrize("past, tokens", [(1, 1), (70, 1), (40, 2 * BLOCK_Q + 3), (1049, 1), (16 * 256 + 32, 1)])
def test_the_float16_cache_kernel_attends_over_the_widened_cache(float16_kernel, past, tokens):
    """Each float16 number widened to float32 as it is read, float32 sums: the attention over the float16 cache's
    values in float64, up to float32 rounding."""
    _attend_over_a_float_cache(float16_kernel, np.float16, np.random.default_rng(past * 1000 + tokens + 11), past, tokens)


def test_no_buffer_grows_with_the_prompt_or_the_context(kernel):
    func, _ = kernel
    # each tile's buffer (the split form's `partial` scratch is checked below)
    shapes = re.findall(r"(?<!partial) = T\.sblock_alloc_buffer\(\((.*)\)\)$", func.script(), re.MULTILINE)
    assert shapes  # tiles only, all static: no [T, N] scores, whatever the prompt or the context
    assert all(re.fullmatch(r"[\s,]*", re.sub(r"T\.int64\(\d+\)", "", shape)) for shape in shapes), shapes
    sizes = [[int(d) for d in re.findall(r"T\.int64\((\d+)\)", shape)] for shape in shapes]
    largest = max(int(np.prod(dims)) for dims in sizes)
    assert largest <= SHAPE.heads // SHAPE.kv_heads * BLOCK_Q * max(SHAPE.depth, BLOCK_K)
    # the split decode form's scratch (each key range's unnormalized rows with their max and sum) is static too
    scratch = re.findall(r"partial = T\.sblock_alloc_buffer\(\(T\.int64\((\d+)\),\)\)", func.script())
    assert max(map(int, scratch)) == SHAPE.heads * MAX_SPLITS * (SHAPE.depth + 2), scratch


def test_the_serial_decode_form_prefetches_what_it_reads_and_the_split_form_does_not(host_target):
    # a step's weights evict the cache between two layers' attention: the serial form (short contexts) issues the
    # cache lines of its first PREFETCH_BYTES of keys and values up front; the split form's long key ranges are
    # left to hardware prefetch (software prefetch there was 15-50% slower, docs/dev-notes.md "Session 13")
    lanes = cpu_params(host_target).lanes
    serial, split = (decode_attention_func(SHAPE, lanes, form).script() for form in (False, True))
    assert re.search(r'"llvm\.prefetch[.a-z0-9]*", T\.address_of\(kc\[', serial), serial
    assert re.search(r'"llvm\.prefetch[.a-z0-9]*", T\.address_of\(vc\[', serial), serial
    assert "llvm.prefetch" not in split
