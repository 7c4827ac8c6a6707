"""The tiled-attention rewrite (slmc.schedules.flash_rewrite): which chains it replaces, and what the built
resident functions no longer allocate."""

from __future__ import annotations

import tvm
from tvm import relax, tirx

from slmc.graph.kv_cache import RESIDENT_ALL, RESIDENT_LAST, RESIDENT_STEP
from slmc.schedules.attention_rewrite import attention_rewrite
from slmc.schedules.flash_rewrite import FlashRewrite, flash_rewrite
from slmc.schedules.kv_append import kv_append
from slmc.schedules.resident_kv import resident_function, with_last_position


def test_each_layer_of_the_resident_functions_becomes_one_tiled_kernel(tiny):
    spec, program = tiny
    module, _ = resident_function(kv_append(attention_rewrite(program.module)), spec.kv_cache)
    module = with_last_position(module, one_token=True)
    record, notes = FlashRewrite(), []
    out = flash_rewrite(16, notes, record)(module)
    layers = spec.kv_cache.layers
    resident = (RESIDENT_ALL, RESIDENT_LAST, RESIDENT_STEP)  # resident_step: the one-token decode (slmc.schedules.one_token)
    assert record.rewritten == {name: layers for name in resident} and not record.declined
    assert notes == ["attention: one tiled kernel per layer (flash_attention) in "
                     + ", ".join(f"{name} {layers}" for name in resident)]
    for name in resident:
        script = out[name].script()
        assert script.count("R.call_tir(flash_attention") == layers
        assert "attention_scores" not in script and "attention_values" not in script and "softmax" not in script
    assert "softmax" in out["main"].script()  # the copy contract's main keeps its kernels (no layer-indexed cache)


def test_a_chain_without_a_mask_is_left_with_the_reason():
    from slmc.schedules.attention_rewrite import SCORES, VALUES
    from slmc.schedules.kv_append import LAYER_ATTR
    from slmc.schedules.resident_kv import resident_scores_te, resident_values_te
    from slmc.schedules.rule import KERNEL_ATTR

    q = relax.Var("q", relax.TensorType([2, 3, 16], "float32"))
    cache = relax.Var("cache", relax.TensorType([1, 1, 2, 8, 16], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("resident_all", [q, cache]):
        with bb.dataflow():
            scores = bb.emit_te(resident_scores_te, q, cache, 0, 1, 8, primfunc_name_hint=SCORES,
                                primfunc_attrs={KERNEL_ATTR: SCORES, LAYER_ATTR: 0})
            probs = bb.emit(relax.op.nn.softmax(scores, axis=-1))
            out = bb.emit_output(bb.call_te(resident_values_te, probs, cache, 0, 1, primfunc_name_hint=VALUES,
                                            primfunc_attrs={KERNEL_ATTR: VALUES, LAYER_ATTR: 0}))
        bb.emit_func_output(out)
    record = FlashRewrite()
    module = bb.get()
    assert flash_rewrite(16, None, record)(module).same_as(module)
    assert record.declined == ["layer 0: no additive mask before the softmax"]


def _per_head_quadratic_buffers(module: tvm.IRModule, name: str) -> dict[str, list]:
    """Buffers of the kernels ``name`` calls with a static dimension above 1 and two dynamic ones
    (``[H, T, P + T]`` scores or probabilities); a ``[T, P + T]`` mask is not one."""
    called = set()

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.GlobalVar):
            called.add(expr.op)

    relax.analysis.post_order_visit(module[name].body, visit)
    found = {}
    for gvar in called:
        func = module[gvar]
        if not isinstance(func, tirx.PrimFunc):
            continue
        for param in func.params:
            dims = list(getattr(param, "shape", None) or [])
            static = [d for d in dims if isinstance(d, tirx.IntImm) and int(d) > 1]
            if static and len([d for d in dims if not isinstance(d, tirx.IntImm)]) >= 2:
                found.setdefault(gvar.name_hint, []).append(dims)
    return found


def test_the_built_prompt_step_allocates_no_per_head_scores(tiny, host_target):
    from slmc.backend.lowering import RelaxProgram, build

    spec, program = tiny
    copy = RelaxProgram(program.module, program.weight_names, program.weights, program.num_inputs)
    build(copy, host_target, spec.kv_cache)
    for name in (RESIDENT_ALL, RESIDENT_LAST):
        assert _per_head_quadratic_buffers(copy.scheduled, name) == {}
    assert _per_head_quadratic_buffers(copy.scheduled, "main")  # the copy contract's main still has them: the check sees them


def test_an_int8_cache_becomes_the_tiled_kernel_that_reads_its_scales(tiny):
    from dataclasses import replace

    spec, program = tiny
    module, _ = resident_function(kv_append(attention_rewrite(program.module)), replace(spec.kv_cache, dtype="int8"))
    record = FlashRewrite()
    out = flash_rewrite(16, [], record)(module)
    assert record.rewritten == {RESIDENT_ALL: spec.kv_cache.layers} and not record.declined
    kernels = [f for _, f in out.functions_items() if isinstance(f, tirx.PrimFunc) and f.attrs is not None
               and str(f.attrs.get("slmc.kernel", "")) == "flash_attention"]
    assert kernels and all([p.name for p in f.params] == ["q", "kc", "vc", "ks", "vs", "mask", "out"] for f in kernels)
