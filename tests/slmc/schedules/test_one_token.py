"""resident_step (slmc.schedules.one_token): the one-token decode step on static shapes, beside resident_last."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax
from schedule_helpers import greedy_with_and_without_step

from slmc.graph.kv_cache import RESIDENT_ALL, RESIDENT_LAST, RESIDENT_STEP
from slmc.models import tiny_lm
from slmc.schedules.not_resident import NotResident
from slmc.schedules.one_token import one_token_function


@pytest.fixture(scope="module")
def built(host_target):
    from slmc.backend.lowering import build, to_relax
    from slmc.graph.ir import trace

    spec = tiny_lm.build()
    program = to_relax(trace(spec))
    vm = relax.VirtualMachine(build(program, host_target, spec.kv_cache, one_token_step=True), tvm.cpu())
    return spec, program, vm


def _calls(vm, name, *args):
    """(logits, Counter of the VM's builtin calls, number of kernel calls) of one call of ``name``."""
    seen = []
    vm.set_instrument(tvm_ffi.convert(lambda _f, symbol, before, *_: seen.append(str(symbol)) if before else None))
    logits = vm[name](*args).numpy()
    vm.set_instrument(tvm_ffi.convert(lambda *_: 0))
    return logits, Counter(s for s in seen if s.startswith("vm.")), sum(1 for s in seen if not s.startswith("vm."))


def test_the_step_has_static_token_shapes(built):
    _, program, _ = built
    step = program.scheduled[RESIDENT_STEP]
    assert [int(v) for v in step.params[0].ty.shape.values] == [1, 1]
    assert "R.Tensor((1, 1, 256)" in step.script()  # the logits of the one token
    assert program.residency.last_position is None and RESIDENT_STEP in program.residency.notes()[0]


def test_the_steps_cache_writes_are_one_token_copies_too(built):
    """``call_tir_inplace`` (the cache writes) is redirected like ``call_tir``: the step writes with
    ``kv_write_step`` kernels whose new keys are one row, resident_last with the symbolic ``kv_write``."""
    from slmc.schedules.one_token import STEP_SUFFIX
    from slmc.schedules.resident_kv import WRITE

    _, program, _ = built
    symbolic = re.compile(rf"\b{WRITE}\d*\b")  # kv_write, kv_write1, ... but not kv_write1_step
    step = program.scheduled[RESIDENT_STEP].script()
    assert f"{WRITE}{STEP_SUFFIX}" in step and not symbolic.search(step)
    assert symbolic.search(program.scheduled[RESIDENT_LAST].script())


def _shared_kernel_module() -> tvm.IRModule:
    """OPT's fc1 + ReLU in miniature: a kernel with a symbolic row count, called by a function of ``T``
    tokens, its output read by a Relax ReLU (legalized after the binding)."""
    from tvm.script import ir as I, relax as R, tirx as T

    @I.ir_module
    class Module:
        @T.prim_func(private=True, s_tir=True)
        def linear(x: T.handle, out: T.handle):
            rows = T.int64()
            X = T.match_buffer(x, (rows, T.int64(4)), "float32")
            Y = T.match_buffer(out, (rows, T.int64(4)), "float32")
            for i, j in T.grid(rows, T.int64(4)):
                with T.sblock("y"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    Y[vi, vj] = X[vi, vj] * T.float32(2)

        @R.function
        def last(input_ids: R.Tensor((1, "t"), "int64"), x: R.Tensor(("t", 4), "float32")):
            t = T.int64()
            cls = Module
            with R.dataflow():
                y = R.call_tir(cls.linear, (x,), out_ty=R.Tensor((t, 4), "float32"))
                z = R.nn.relu(y)
                R.output(z)
            return z

    return Module


def test_the_step_calls_its_own_static_kernels_and_fuses():
    """The step's call_tir goes to a copy of the kernel specialized to one row (``linear_step``); the
    function of ``T`` tokens keeps the symbolic kernel; FuseTIR then fuses the step's kernel with the ReLU
    (with the shared symbolic kernel, TVM 0.27 refused: "Inconsistent buffers ... mapped to the same relax var")."""
    from slmc.schedules.one_token import STEP_SUFFIX, one_token_module

    mod = _shared_kernel_module()
    out, step = one_token_module(mod, mod["last"])
    out["step"] = step.with_attr("global_symbol", "step")
    copy = out[f"linear{STEP_SUFFIX}"]
    assert [int(d) for d in copy.params[0].ty.shape] == [1, 4]
    assert any(isinstance(d, tvm.tirx.Var) for d in out["linear"].params[0].ty.shape)  # resident_last's, kept
    fuse = tvm.transform.Sequential([relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                                     relax.transform.FuseOps(), relax.transform.FuseTIR()])
    assert "fused_linear_step_relu" in fuse(out)["step"].script()
    shared = tvm.IRModule(dict(mod.functions_items()))  # the step bound alone still calls the symbolic kernel
    shared["step"] = one_token_function(mod["last"]).with_attr("global_symbol", "step")
    with pytest.raises(tvm.error.InternalError, match="Inconsistent buffers"):
        fuse(shared)


def test_the_step_equals_resident_all_with_fewer_vm_calls(built):
    spec, program, vm = built
    cache = spec.kv_cache
    shape = (cache.layers, 1, cache.kv_heads, cache.max_context + 1, cache.head_dim)
    rng = np.random.default_rng(0)
    keys, values = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    weights = [tvm.runtime.tensor(w) for w in program.weights]
    results = {}
    for name in (RESIDENT_ALL, RESIDENT_STEP):
        k, v = tvm.runtime.tensor(keys), tvm.runtime.tensor(values)  # each from the same 20 cached positions
        logits, builtins, kernels = _calls(vm, name, tvm.runtime.tensor(np.array([[17]])), k, v, tvm_ffi.Shape((21,)),
                                           *weights)
        results[name] = (logits, builtins, kernels, k.numpy(), v.numpy())
    (every, all_builtins, all_kernels, all_k, all_v), (step, step_builtins, step_kernels, step_k, step_v) = \
        results[RESIDENT_ALL], results[RESIDENT_STEP]
    np.testing.assert_allclose(step, every, atol=1e-5, rtol=0)  # one-row schedules of the same sums
    np.testing.assert_array_equal(step_k, all_k)  # the same slot written with the same keys
    np.testing.assert_array_equal(step_v, all_v)
    assert step_kernels <= all_kernels
    assert sum(step_builtins.values()) < sum(all_builtins.values())  # no shapes built per call for the tokens
    assert step_builtins["vm.builtin.make_shape"] < all_builtins["vm.builtin.make_shape"]


def test_a_function_without_a_symbolic_token_count_is_refused():
    ids = relax.Var("input_ids", relax.TensorType([1, 4], "int64"))
    func = relax.Function([ids], ids, relax.TensorType([1, 4], "int64"))
    with pytest.raises(NotResident, match="no symbolic token count"):
        one_token_function(func)


def test_resident_last_is_kept_beside_the_step(built):
    _, program, _ = built
    assert RESIDENT_LAST in [gv.name_hint for gv in program.scheduled.functions]


def test_a_resident_cache_decodes_the_same_tokens_with_and_without_the_step(built):
    """ResidentCache's one-token branch (taken only for a library built with ``one_token_step``) against
    resident_last on a prompt then eight greedy steps."""
    spec, program, vm = built
    runs = greedy_with_and_without_step(vm, [tvm.runtime.tensor(w) for w in program.weights], spec.kv_cache)
    assert runs[1][0] == runs[0][0]
    np.testing.assert_allclose(runs[1][1], runs[0][1], atol=1e-5, rtol=0)  # one-row schedules of the same sums


def test_the_steps_logits_are_the_heads_output_viewed(built):
    """No copy kernel after the head (slmc.schedules.returned_view): the step's last call is the head's
    kernel, its ``[1, V]`` result returned as ``[1, 1, V]`` by ``vm.builtin.reshape``; each step's logits
    are its own memory (the first step's survive the second)."""
    spec, program, vm = built
    assert re.search(r'R\.call_packed\("vm\.builtin\.reshape", \w+, R\.shape\(\[1, 1, 256\]\)',
                     program.scheduled[RESIDENT_STEP].script())
    cache = spec.kv_cache
    shape = (cache.layers, 1, cache.kv_heads, cache.max_context + 1, cache.head_dim)
    weights = [tvm.runtime.tensor(w) for w in program.weights]
    k, v = tvm.runtime.tensor(np.zeros(shape, np.float32)), tvm.runtime.tensor(np.zeros(shape, np.float32))
    seen = []
    vm.set_instrument(tvm_ffi.convert(lambda _f, symbol, before, *_: seen.append(str(symbol)) if before else None))
    first = vm[RESIDENT_STEP](tvm.runtime.tensor(np.array([[3]])), k, v, tvm_ffi.Shape((0,)), *weights)
    vm.set_instrument(tvm_ffi.convert(lambda *_: 0))
    kept = first.numpy().copy()
    vm[RESIDENT_STEP](tvm.runtime.tensor(np.array([[11]])), k, v, tvm_ffi.Shape((1,)), *weights)
    np.testing.assert_array_equal(first.numpy(), kept)
    calls = [s for s in seen if s != "vm.builtin.null_value"]  # kills of dead registers (none since planned_kills)
    assert calls[-1] == "vm.builtin.reshape" and "matmul" in calls[-2]


def test_the_step_kills_no_register_and_makes_each_view_once(built):
    """The one-token step's storages are planned (constant, small): no ``kill_object`` left
    (slmc.schedules.planned_kills); each layer's rotary-table views are made once per step, not per layer
    (TVM's common-subexpression elimination, slmc.backend.base): no two ``vm.builtin.reshape`` of the same register to
    the same shape."""
    _spec, program, _vm = built
    script = program.scheduled[RESIDENT_STEP].script()
    assert "R.vm.kill_object(" not in script
    views = re.findall(r'R\.call_packed\("vm\.builtin\.reshape", (\w+), (R\.shape\(\[[^\]]*\]\))', script)
    assert views and len(set(views)) == len(views)
