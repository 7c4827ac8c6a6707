"""The two fixes that make TVM's build of a graph byte-identical from one process to the next."""

import tvm
from tvm import relax, te, tirx
from tvm.relax.utils import gen_call_tir_inputs

import tvm.relax.block_builder as block_builder
from slmc.backend.deterministic_build import deterministic_call_te, sort_heap_stores, sort_size_parameters, sorted_shape_funcs


def attention_like_kernel():
    """A kernel whose output length ``past + tokens`` is no input dimension: both sizes become
    scalar parameters, in the order of a Python set of TVM objects (address order)."""
    tokens, past = tirx.Var("tokens", "int64"), tirx.Var("past", "int64")
    x = relax.Var("x", relax.TensorType([4, tokens + past], "float32"))

    def compute(t):
        return te.compute((4, tokens), lambda i, j: t[i, j + past], name="window")

    return gen_call_tir_inputs(compute, x)


def scalar_names(func, call_args):
    return [str(p.name) for p in func.params[1:3]], [str(a) for a in call_args[1:]]


def test_size_parameters_are_sorted_by_name_in_kernel_and_call_alike():
    func, call_args, _ = attention_like_kernel()
    sorted_func, sorted_args = sort_size_parameters(func, list(call_args))
    params, args = scalar_names(sorted_func, sorted_args)
    assert params == ["past", "tokens"] and args == ["past", "tokens"]
    assert sorted_func.params[0].same_as(func.params[0]) and sorted_func.params[-1].same_as(func.params[-1])
    assert sorted_func.body.same_as(func.body)
    again, again_args = sort_size_parameters(sorted_func, sorted_args)
    assert again.same_as(sorted_func) and again_args == sorted_args


def test_call_te_is_patched_only_inside_the_block():
    original = block_builder.gen_call_tir_inputs
    with deterministic_call_te():
        wrapper = block_builder.gen_call_tir_inputs
        assert wrapper is not original
        with deterministic_call_te():  # nesting does not wrap twice
            assert block_builder.gen_call_tir_inputs is wrapper
        assert block_builder.gen_call_tir_inputs is wrapper
        bb = relax.BlockBuilder()
        tokens, past = tirx.Var("tokens", "int64"), tirx.Var("past", "int64")
        x = relax.Var("x", relax.TensorType([4, tokens + past], "float32"))
        with bb.function("main", [x]):
            call = bb.call_te(lambda t: te.compute((4, tokens), lambda i, j: t[i, j + past], name="w"), x)
            bb.emit_func_output(bb.emit(call))
        kernel = next(f for f in bb.get().functions.values() if isinstance(f, tirx.PrimFunc))
        assert [str(p.name) for p in kernel.params[1:3]] == ["past", "tokens"]
    assert block_builder.gen_call_tir_inputs is original


def heap_function(stores):
    heap = tirx.decl_buffer((9,), "int64", name="H")
    slot = lambda i: tirx.IntImm("int64", i)  # noqa: E731
    load = lambda i: tirx.BufferLoad(heap, [slot(i)])  # noqa: E731
    body = tirx.SeqStmt([tirx.BufferStore(heap, value(load), [slot(i)]) for i, value in stores])
    return tirx.PrimFunc([heap], body).with_attr("tirx.is_host_func", True)


def slots(func):
    return [int(st.indices[0].value) for st in func.body.seq]


def test_independent_heap_stores_are_sorted_by_slot():
    func = heap_function([(7, lambda h: h(0) + h(1)), (5, lambda h: h(2) * h(0)), (6, lambda h: h(1))])
    assert slots(sort_heap_stores(func)) == [5, 6, 7]
    module = sorted_shape_funcs(tvm.IRModule({"shape_func": func}))
    assert slots(module["shape_func"]) == [5, 6, 7]


def test_dependent_heap_stores_keep_their_order():
    func = heap_function([(7, lambda h: h(0) + h(1)), (5, lambda h: h(7) * h(0))])
    assert sort_heap_stores(func).same_as(func)
