from slmc.npu.fallback import cpu_fallbacks


def _by_op(fallbacks):
    return {f["op"]: f for f in fallbacks}


def test_every_other_op_falls_back_with_its_reason(w8a8_lm, npu_target):
    graph, _, _ = w8a8_lm
    fallbacks = _by_op(cpu_fallbacks(graph, npu_target))
    assert "w8a8_linear" not in fallbacks  # offloaded
    assert "float linear" in fallbacks["linear"]["reason"] and fallbacks["linear"]["count"] == 1  # lm_head excluded
    assert "not in the NPU's ops.supported" in fallbacks["rsqrt"]["reason"]  # generic NPU lists no rsqrt
    assert "quantizes linears only" in fallbacks["softmax"]["reason"]
    assert all(f["count"] >= len(f["nodes"]) > 0 for f in fallbacks.values())


def test_without_linear_support_int8_linears_fall_back(w8a8_lm, npu_target):
    graph, _, _ = w8a8_lm
    target = npu_target.model_copy(update={"ops": npu_target.ops.model_copy(update={"supported": ["add"]})})
    fallbacks = _by_op(cpu_fallbacks(graph, target))
    assert "'linear' is not in the NPU's ops.supported" in fallbacks["w8a8_linear"]["reason"]
