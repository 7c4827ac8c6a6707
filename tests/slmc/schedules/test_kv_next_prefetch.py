"""kv_next_prefetch (slmc.schedules.kv_next_prefetch): the decode step prefetches the next layer's KV cache
lines a few linears ahead of its attention; exact, bounded, the step only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax

from slmc.graph.kv_cache import RESIDENT_ALL, RESIDENT_LAST, RESIDENT_STEP
from slmc.schedules import kv_next_prefetch as next_prefetch
from slmc.schedules.flash_attention import PREFETCH_BYTES
from slmc.schedules.kv_append import LAYER_ATTR
from slmc.schedules.rule import KERNEL_ATTR

RECIPE = Path(__file__).parents[3] / "examples/recipes/bench/w4a8-g32-a32-rtn-merge-kv-f16.yaml"


def _build(final, cache, target):
    from slmc.backend.lowering import build, to_relax

    program = to_relax(final)
    return program, relax.VirtualMachine(build(program, target, cache, one_token_step=True), tvm.cpu())


@pytest.fixture(scope="module")
def built(host_target):
    """tiny-lm (2 layers) with the issue-22 recipe (w4a8, merged siblings, float16 cache), built with the
    prefetch and without it (no layer has that many linears ahead of its attention)."""
    from slmc.driver.compress import compress
    from slmc.frontend.model_source import load_model
    from slmc.spec.recipe import load_recipe

    spec = load_model("tiny-lm")
    compressed = compress(spec, load_recipe(RECIPE), host_target)
    with_prefetch = _build(compressed.final, compressed.kv_cache, host_target)
    saved = next_prefetch.LINEARS_AHEAD
    next_prefetch.LINEARS_AHEAD = 99
    try:
        without = _build(compressed.final, compressed.kv_cache, host_target)
    finally:
        next_prefetch.LINEARS_AHEAD = saved
    return compressed, with_prefetch, without


def _prefetches(program, name):
    """The layer of each kv_prefetch kernel ``name`` calls, in order (after lowering a kernel is the call's
    operator; before it, ``call_tir``'s first argument)."""
    mod, layers = program.scheduled, []
    for block in mod[name].body.blocks:
        for binding in block.bindings:
            call = binding.value
            if not isinstance(call, relax.Call):
                continue
            callee = call.op if isinstance(call.op, tvm.ir.GlobalVar) else (call.args[0] if call.args else None)
            func = mod[callee] if isinstance(callee, tvm.ir.GlobalVar) else None
            if isinstance(func, tvm.tirx.PrimFunc) and func.attrs is not None and \
                    str(func.attrs.get(KERNEL_ATTR, "")) == next_prefetch.KIND:
                layers.append(int(func.attrs[LAYER_ATTR]))
    return layers


def test_the_step_prefetches_the_second_layer_only_and_prefill_is_untouched(built):
    compressed, (program, _), (plain, _) = built
    assert compressed.kv_cache.layers == 2
    assert _prefetches(program, RESIDENT_STEP) == [1]  # layer 0 has no earlier linear; layer 1 is the last
    for name in ("main", RESIDENT_ALL, RESIDENT_LAST):
        assert _prefetches(program, name) == []
    assert _prefetches(plain, RESIDENT_STEP) == []


def test_logits_and_cache_are_bit_exact_with_and_without(built):
    """Prefill of 9 tokens (resident_all), then 4 greedy resident_step calls: identical logits (max abs
    difference measured 0.0) and identical caches."""
    compressed, (program, vm), (_, plain_vm) = built
    cache = compressed.kv_cache
    shape = (cache.layers, 1, cache.kv_heads, cache.max_context + 1, cache.head_dim)
    outputs = []
    for machine in (vm, plain_vm):
        weights = [tvm.runtime.tensor(w) for w in program.weights]
        keys, values = (tvm.runtime.tensor(np.zeros(shape, np.float16)) for _ in range(2))
        ids = np.array([[3, 1, 4, 1, 5, 9, 2, 6, 5]])
        seen = [machine[RESIDENT_ALL](tvm.runtime.tensor(ids), keys, values, tvm_ffi.Shape((0,)), *weights).numpy()]
        token, past = int(seen[0][0, -1].argmax()), ids.shape[1]
        for _ in range(4):
            logits = machine[RESIDENT_STEP](tvm.runtime.tensor(np.array([[token]])), keys, values,
                                            tvm_ffi.Shape((past,)), *weights).numpy()
            seen.append(logits)
            token, past = int(logits[0, -1].argmax()), past + 1
        outputs.append((seen, keys.numpy(), values.numpy()))
    (got, got_k, got_v), (want, want_k, want_v) = outputs
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got_k, want_k)
    np.testing.assert_array_equal(got_v, want_v)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_the_kernel_prefetches_the_layers_first_keys_up_to_the_bound(dtype, host_target):
    """SmolLM-135M's cache shape: at most PREFETCH_BYTES of keys, values (and int8 scales) of its layer."""
    func = next_prefetch.kv_prefetch_func(30, 3, 2049, 64, dtype, 7)
    cap = next_prefetch.prefetch_keys(3, 64, dtype)
    row = 64 * tvm.DataType(dtype).bits // 8 + (4 if dtype == "int8" else 0)
    assert cap * 3 * 2 * row <= PREFETCH_BYTES < (cap + 1) * 3 * 2 * row
    script = func.script()
    assert f"T.min(past + T.int64(1), T.int64({cap}))" in script  # keys 0..past (this step's included), bounded
    assert script.count("llvm.prefetch") == (4 if dtype == "int8" else 2)
    assert f"[T.int64(7), T.int64(0), kv," in script  # its own layer only
    mod = tvm.IRModule({"kv_prefetch": func.with_attr("global_symbol", "kv_prefetch")})
    tvm.compile(mod, target=host_target.tvm_target())

