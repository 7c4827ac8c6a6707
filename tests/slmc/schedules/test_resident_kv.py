"""The resident KV cache rewrite (slmc.schedules.resident_kv): structure, exactness, and when it does not apply."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from schedule_helpers import workspace_allocation_sites
import tvm_ffi
from tvm import relax

from slmc.graph.kv_cache import RESIDENT_ALL, RESIDENT_LAST
from slmc.models import tiny_lm
from slmc.schedules.attention_rewrite import attention_rewrite
from slmc.schedules.kv_append import kv_append
from slmc.schedules.not_resident import NotResident
from slmc.schedules.resident_kv import resident_function


def test_every_layer_appends_in_place_and_attention_reads_the_resident_cache(tiny):
    spec, program = tiny
    module, layers = resident_function(kv_append(attention_rewrite(program.module)), spec.kv_cache)
    script = module[RESIDENT_ALL].script()
    assert layers == spec.kv_cache.layers == 2
    assert script.count("R.call_tir_inplace(") == 2 * layers  # keys and values of each layer
    assert "R.concat" not in script and "kv_append" not in script and "past_keys" not in script  # no per-step copy
    assert "cache_keys: R.Tensor((2, 1, 4, 257, 32)" in script  # max_context + the sink, static
    assert len(re.findall(r"R\.call_tir\(attention_scores\d*, \(\w+, lv\w*,", script)) == layers  # reads a write's output
    assert len(re.findall(r"R\.call_tir\(attention_values\d*, \(\w+, lv\w*[,)]", script)) == layers
    assert "R.concat" in module["main"].script()  # main keeps the copy contract (native runtime, RPC, copy callers)


def test_without_attention_kernels_that_read_the_cache_the_copy_contract_stays_with_the_reason(tiny):
    spec, program = tiny  # the GPU kind's module: attention reads the append through repeat/transposed copies
    with pytest.raises(NotResident, match=r"past_keys and past_values are still read by .*kv_append"):
        resident_function(kv_append(program.module), spec.kv_cache)


def test_a_main_without_the_cache_signature_is_not_rewritten():
    x = relax.Var("x", relax.TensorType([4], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x], attrs={"num_input": 1}):
        with bb.dataflow():
            out = bb.emit_output(relax.op.add(x, x))
        bb.emit_func_output(out)
    with pytest.raises(NotResident, match="does not take"):
        resident_function(bb.get(), tiny_lm.build().kv_cache)


def test_the_built_resident_step_equals_the_copy_contract(tiny, host_target):
    from slmc.backend.lowering import RelaxProgram, build

    spec, program = tiny
    cache = spec.kv_cache
    copy = RelaxProgram(program.module, program.weight_names, program.weights, program.num_inputs)
    vm = relax.VirtualMachine(build(copy, host_target, cache), tvm.cpu())
    assert copy.residency.mode == "resident" and copy.residency.layers == 2
    scheduled = copy.scheduled[RESIDENT_ALL].script()
    assert "concatenate" not in scheduled and "kv_append" not in scheduled
    weights = [tvm.runtime.tensor(w) for w in program.weights]
    shape = (cache.layers, 1, cache.kv_heads, cache.max_context + 1, cache.head_dim)
    resident_k, resident_v = (tvm.runtime.tensor(np.zeros(shape, np.float32)) for _ in range(2))
    keys, values = cache.empty()
    rng = np.random.default_rng(0)
    for ids in (rng.integers(0, 256, (1, 7)), np.array([[5]]), np.array([[9, 3]]), np.array([[200]])):
        past = keys.shape[3]
        logits, keys, values = (o.numpy() for o in vm["main"](tvm.runtime.tensor(ids), tvm.runtime.tensor(keys),
                                                               tvm.runtime.tensor(values), *weights))
        resident = vm[RESIDENT_ALL](tvm.runtime.tensor(ids), resident_k, resident_v, tvm_ffi.Shape((past,)), *weights).numpy()
        # the resident functions' attention is one tiled kernel per layer (slmc.schedules.flash_rewrite): the same
        # sums in another order, so close to main's, not bit-identical (layer 1's keys and values differ through
        # layer 0's attention output); measured max abs difference over the 4 steps: logits 7.2e-7, keys 7.2e-7,
        # values 4.8e-7 (AVX-512)
        np.testing.assert_allclose(resident, logits, rtol=0, atol=1e-5)
        np.testing.assert_allclose(resident_k.numpy()[:, :, :, :keys.shape[3]], keys, rtol=0, atol=1e-5)
        np.testing.assert_allclose(resident_v.numpy()[:, :, :, :values.shape[3]], values, rtol=0, atol=1e-5)
    assert copy.residency.last_position is None  # the head was found: resident_last computes one row
    head = copy.scheduled[RESIDENT_LAST].script()
    assert "R.Tensor((1, 1, 256)" in head
    ids = rng.integers(0, 256, (1, 9))
    every = vm[RESIDENT_ALL](tvm.runtime.tensor(ids), resident_k, resident_v, tvm_ffi.Shape((1,)), *weights).numpy()
    last = vm[RESIDENT_LAST](tvm.runtime.tensor(ids), resident_k, resident_v, tvm_ffi.Shape((1,)), *weights).numpy()
    np.testing.assert_array_equal(last, every[:, -1:])  # measured: bit-identical


def test_an_int8_cache_is_written_quantized_with_scales_and_read_dequantized(tiny):
    from dataclasses import replace

    spec, program = tiny
    cache = replace(spec.kv_cache, dtype="int8")
    module, layers = resident_function(kv_append(attention_rewrite(program.module)), cache)
    function = module[RESIDENT_ALL]
    script = function.script()
    assert [p.name for p in function.params[1:5]] == ["cache_keys", "cache_values", "key_scales", "value_scales"]
    assert 'cache_keys: R.Tensor((2, 1, 4, 257, 32), dtype="int8")' in script
    assert 'key_scales: R.Tensor((2, 1, 4, 257), dtype="float32")' in script
    assert script.count("R.call_tir_inplace(kv_write_int8") == 2 * layers
    assert int(function.attrs["num_input"]) == 6


def test_the_built_int8_resident_cache_matches_the_copy_contract_over_the_same_rounded_cache(tiny, host_target):
    """The artifact's int8 cache against ``main`` (the eager model's graph) fed the cache rounded as stored
    (``CopyDecoder``): the only difference is that within a step the new tokens attend to themselves rounded."""
    from dataclasses import replace

    from slmc.backend.lowering import RelaxProgram, build
    from slmc.graph.kv_cache import CopyDecoder, quantize_rows

    spec, program = tiny
    cache = replace(spec.kv_cache, dtype="int8")
    copy = RelaxProgram(program.module, program.weight_names, program.weights, program.num_inputs)
    vm = relax.VirtualMachine(build(copy, host_target, cache), tvm.cpu())
    assert copy.residency.mode == "resident"
    assert any("stored in int8" in note for note in copy.residency.notes())
    weights = [tvm.runtime.tensor(w) for w in program.weights]
    rows = (cache.layers, 1, cache.kv_heads, cache.max_context + 1)
    k8, v8 = (tvm.runtime.tensor(np.zeros((*rows, cache.head_dim), np.int8)) for _ in range(2))
    ks, vs = (tvm.runtime.tensor(np.zeros(rows, np.float32)) for _ in range(2))

    def step(ids, keys, values):
        out = vm["main"](tvm.runtime.tensor(ids), tvm.runtime.tensor(keys), tvm.runtime.tensor(values), *weights)
        return tuple(o.numpy() for o in out)

    eager = CopyDecoder(step, cache)
    rng = np.random.default_rng(0)
    past = 1
    for ids in (rng.integers(0, 256, (1, 7)), np.array([[5]]), np.array([[9, 3]]), np.array([[200]])):
        expected = eager.feed(ids)
        got = vm[RESIDENT_ALL](tvm.runtime.tensor(ids), k8, v8, ks, vs, tvm_ffi.Shape((past,)), *weights).numpy()
        past += ids.shape[1]
        # layer 0's stored cache is exactly the rounding of the eager cache (same ints, same scales); layer 1's
        # keys come from layer 0's attention, which differs slightly (the self-attention above): within one level
        for stored, scales, eager_cache in ((k8, ks, eager.keys), (v8, vs, eager.values)):
            q, scale = quantize_rows(eager_cache[:, :, :, 1:])
            np.testing.assert_array_equal(stored.numpy()[0, :, :, 1:past], q[0])
            np.testing.assert_allclose(scales.numpy()[0, :, :, 1:past], scale[0], rtol=1e-6, atol=0)
            assert np.abs(stored.numpy()[:, :, :, 1:past].astype(np.int32) - q).max() <= 1
        # measured max abs logits difference per step with the score/value kernels: 4.6e-3 (the 7-token prompt),
        # then 8.4e-4, 8.9e-4, 5.8e-4; the tiled kernel (slmc.schedules.flash_attention) sums in another order
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-2)


def test_the_int8_cache_write_allocates_no_runtime_workspace(tiny, host_target):
    """Its per-row pair of floats (max|x|, the divisor) is a ``STACK_SCOPE`` buffer: no
    ``TVMBackendAllocWorkspace`` per written row (with ``"local"``: one site, called per row)."""
    from dataclasses import replace

    from slmc.schedules.resident_kv import kv_write_int8_func

    cache = replace(tiny[0].kv_cache, dtype="int8")
    assert workspace_allocation_sites(kv_write_int8_func(cache, 1), host_target.tvm_target()) == 0
