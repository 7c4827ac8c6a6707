"""rotary_kv_rewrite (slmc.schedules.rotary_kv_rewrite): the decode step's rotary q/k and K/V cache writes as one kernel.

A two-layer Llama (GQA, head size 32, float32 weights) with merged siblings (one QKV projection split three ways)
and without (three projections), built for each stored cache dtype; the step (rewritten) against ``resident_all``
(prefill, not rewritten) on the same cache, and a prompt plus greedy steps through ``ResidentCache`` with and
without the step.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
import tvm
import tvm_ffi
from tvm import relax
from schedule_helpers import greedy_with_and_without_step

from slmc.graph.kv_cache import RESIDENT_ALL, RESIDENT_LAST, RESIDENT_STEP
from slmc.schedules.rotary_kv import KIND

WRITES = re.compile(r"\bkv_write(_int8)?\d*_step\b")


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """(spec, {merged: traced graph}) of a two-layer Llama: hidden 128, 4 heads of 32, 2 KV heads."""
    from slmc.driver.compress import compress
    from slmc.graph.ir import trace
    from slmc.models.huggingface import load_hf_model
    from slmc.spec.recipe import recipe_from_document
    from slmc.spec.target import load_target
    from slmc.spec.yaml_source import parse_yaml

    folder = tmp_path_factory.mktemp("llama")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      bos_token_id=None, eos_token_id=None, pad_token_id=None)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    spec = load_hf_model(folder)
    recipe = recipe_from_document(parse_yaml("passes:\n  - fuse: {merge_siblings: true}\n", "merge"), Path.cwd())
    graphs = {False: trace(spec), True: compress(spec, recipe, load_target("host")).final}
    return spec, graphs


_BUILT: dict[tuple[bool, str], tuple] = {}


def _build(llama, host_target, merged: bool, dtype: str):
    """(cache, program, vm), each (merged, dtype) built once (three builds in all: the tests share them)."""
    from slmc.backend.lowering import build, to_relax

    if (merged, dtype) not in _BUILT:
        spec, graphs = llama
        cache = replace(spec.kv_cache, dtype=dtype)
        program = to_relax(graphs[merged])
        _BUILT[merged, dtype] = cache, program, relax.VirtualMachine(build(program, host_target, cache), tvm.cpu())
    return _BUILT[merged, dtype]


@pytest.mark.parametrize(("merged", "dtype"), [(True, "float16"), (False, "int8")])
def test_the_step_has_one_kernel_per_layer_and_none_of_the_five(llama, host_target, merged, dtype):
    cache, program, _ = _build(llama, host_target, merged, dtype)
    step = program.scheduled[RESIDENT_STEP].script()
    called = re.findall(r"^\s+(?:\w+ = )?(\w+)\(", step, re.MULTILINE)  # the kernels and packed functions called
    assert len([c for c in called if re.fullmatch(rf"{KIND}\d*", c)]) == cache.layers
    assert not [c for c in called if WRITES.fullmatch(c) or "transpose" in c or re.search(r"split\d*_reshape", c)]
    assert KIND not in program.scheduled[RESIDENT_LAST].script()  # prefill keeps its kernels
    assert any(f"({KIND}) in {RESIDENT_STEP} {cache.layers}" in note for note in program.notes)


def _state(cache, dtype: str, rng):
    rows = (cache.layers, 1, cache.kv_heads, cache.max_context + 1)
    if dtype == "int8":
        tensors = [rng.integers(-127, 128, (*rows, cache.head_dim)).astype(np.int8) for _ in range(2)]
        tensors += [rng.uniform(0.001, 0.02, rows).astype(np.float32) for _ in range(2)]
    else:
        tensors = [rng.standard_normal((*rows, cache.head_dim)).astype(dtype) for _ in range(2)]
    return tensors


@pytest.mark.parametrize(("merged", "dtype"), [(True, "float32"), (True, "float16"), (False, "int8")])
def test_the_step_equals_prefill_of_one_token_and_writes_the_same_slot(llama, host_target, merged, dtype):
    """The step (rewritten) and ``resident_all`` (not) fed one token at position 21 over the same cache: the same
    logits (measured: identical, 0 largest difference for every dtype; tolerance 1e-5, what the one-row schedules of the
    other kernels may move) and the same numbers cached (exactly: the same operations in the same order)."""
    cache, program, vm = _build(llama, host_target, merged, dtype)
    weights = [tvm.runtime.tensor(w) for w in program.weights]
    state = _state(cache, dtype, np.random.default_rng(0))
    results = {}
    for name in (RESIDENT_ALL, RESIDENT_STEP):
        tensors = [tvm.runtime.tensor(t) for t in state]
        logits = vm[name](tvm.runtime.tensor(np.array([[17]])), *tensors, tvm_ffi.Shape((21,)), *weights).numpy()
        results[name] = (logits, [t.numpy() for t in tensors])
    (every, every_state), (step, step_state) = results[RESIDENT_ALL], results[RESIDENT_STEP]
    np.testing.assert_allclose(step, every, atol=1e-5, rtol=0)
    for got, want in zip(step_state, every_state):
        np.testing.assert_array_equal(got, want)


def test_a_prompt_and_greedy_steps_decode_the_same_with_and_without_the_step(llama, host_target):
    """ResidentCache with the step (rewritten) against resident_last (not): a prompt, then eight greedy tokens, an
    int8 cache (the largest difference measured: 0; tolerance 1e-5)."""
    cache, program, vm = _build(llama, host_target, False, "int8")
    runs = greedy_with_and_without_step(vm, [tvm.runtime.tensor(w) for w in program.weights], cache)
    assert runs[1][0] == runs[0][0]
    np.testing.assert_allclose(runs[1][1], runs[0][1], atol=1e-5, rtol=0)


def test_a_model_without_rotary_keeps_its_step_and_says_why(host_target):
    """The tiny LM (no position encoding in attention): no layer rewritten, the reason in the lowering notes."""
    from slmc.backend.lowering import build, to_relax
    from slmc.graph.ir import trace
    from slmc.models import tiny_lm

    spec = tiny_lm.build()
    program = to_relax(trace(spec))
    build(program, host_target, spec.kv_cache)
    step = program.scheduled[RESIDENT_STEP].script()
    assert KIND not in step and WRITES.search(step)
    assert any(note.startswith("rotary and cache writes not fused: resident_step: no rotary") for note in program.notes)
