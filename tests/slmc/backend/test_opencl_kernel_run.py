"""slmc.backend.opencl_kernel_run: every OpenCL kernel PoCL can run executed and compared with its host build.

Needs PoCL (apt-get install pocl-opencl-icd) and pyopencl (the test extras), as the README's test
command installs them. The planted kernels are built from TVM's own APIs (te + slmc's GPU schedule pass).
"""

import pytest
import tvm
from tvm import te, tirx

from slmc.backend.lowering import build, to_relax
from slmc.backend.opencl_kernel_check import split_kernels
from slmc.backend.opencl_kernel_run import TOLERANCE, execute_kernels, execute_module, how_executed
from slmc.errors import KernelCheckError
from slmc.graph.ir import trace
from slmc.models import tiny_lm
from slmc.schedules.gpu import schedule_gpu_kernels
from slmc.backend.opencl_kernel_check import pocl_compiler
from slmc.spec.target import load_target

MALI = load_target("mali-g710")


def _elementwise(name: str, dtype: str, index=lambda i, n: i) -> tirx.PrimFunc:
    """``B[i] = A[index(i)] * 2`` over a symbolic length ``n``."""
    n = tirx.Var("n", "int64")
    a = te.placeholder((n,), dtype, name="A")
    b = te.compute((n,), lambda i: a[index(i, n)] * tvm.tirx.const(2, dtype), name="B")
    return te.create_prim_func([a, b]).with_attr("global_symbol", name)


def _scheduled(funcs: dict[str, tirx.PrimFunc]) -> tuple[tvm.IRModule, dict[str, str]]:
    """The module with slmc's GPU schedule (dlight's rules) and the OpenCL source of its kernels."""
    with MALI.tvm_target():
        scheduled = schedule_gpu_kernels([])(tvm.IRModule(funcs))
    built = tvm.tirx.build(scheduled, target=MALI.tvm_target())
    (device,) = [m for m in built.imports if m.kind == "opencl"]
    return scheduled, split_kernels(device.inspect_source("cl"))


@pytest.fixture(scope="module")
def mali_build():
    """tiny-lm (a 2-layer Llama-style LM with KV cache and dynamic shapes) built for mali-g710, fp32."""
    program = to_relax(trace(tiny_lm.build()))
    return build(program, MALI), program


def test_every_fixture_kernel_is_executed_on_pocl_and_equals_its_host_build(mali_build):
    checks = execute_kernels(*mali_build, MALI)
    assert checks.kernels >= 10 and checks.executed == checks.kernels and checks.compiled_only == 0 and checks.passed
    # docs/targets.md quotes this build: 39 kernels, largest relative error 4.4e-7
    assert checks.kernels == 39 and max(r.max_rel_error for r in checks.per_kernel) <= 1e-6
    assert checks.device.startswith(f"PoCL {pocl_compiler().version} ")
    for record in checks.per_kernel:
        assert record.status == "executed" and record.passed and record.reason is None, record
        assert record.max_rel_error <= TOLERANCE["float32"] and record.integer_elements_differing == 0, record
        assert record.launches and all(len(launch["global"]) == len(launch["local"]) == 3 for launch in record.launches)
        assert all(g % l == 0 for launch in record.launches for g, l in zip(launch["global"], launch["local"]))
    # The cache append and the token lookup ran with integer positions/ids drawn in range.
    assert {"kv_append_kernel", "take_kernel"} <= {r.kernel for r in checks.per_kernel}
    text = how_executed(checks)
    assert text.startswith(f"{checks.kernels} of {checks.kernels} kernels executed on PoCL ") and "compiled only" not in text


def test_a_planted_wrong_index_kernel_is_caught_naming_it():
    """The scheduled kernel reads A[i + 1] (clamped) where its PrimFunc before scheduling reads A[i]."""
    good = _elementwise("double", "float32")
    wrong = _elementwise("double", "float32", lambda i, n: tvm.te.min(i + 1, n - 1))
    scheduled, sources = _scheduled({"double": wrong})
    with pytest.raises(KernelCheckError) as err:
        execute_module(scheduled, tvm.IRModule({"double": good}), sources, MALI)
    assert err.value.limit == "opencl_execution" and err.value.exit_code == 1
    assert err.value.kernel == "double_kernel" and "kernel 'double_kernel' (PrimFunc 'double')" in str(err.value)
    assert "buffer 'B'" in str(err.value) and "max relative error" in str(err.value)
    (record,) = err.value.verification["gpu_kernels"]["per_kernel"]
    assert record["status"] == "executed" and record["passed"] is False
    # The same schedule of the right PrimFunc passes.
    scheduled, sources = _scheduled({"double": good})
    checks = execute_module(scheduled, tvm.IRModule({"double": good}), sources, MALI)
    assert checks.executed == 1 and checks.passed and checks.per_kernel[0].max_abs_error == 0.0


def test_a_half_precision_kernel_is_reported_compiled_only_with_the_reason():
    if "cl_khr_fp16" in pocl_compiler().extensions:
        pytest.skip("this PoCL device offers cl_khr_fp16: half kernels are executed")
    half = _elementwise("halve", "float16")
    scheduled, sources = _scheduled({"halve": half})
    checks = execute_module(scheduled, tvm.IRModule({"halve": half}), sources, MALI)
    (record,) = checks.per_kernel
    assert record.kernel == "halve_kernel" and record.status == "compiled_only" and record.passed is None
    assert "cl_khr_fp16" in record.reason and "does not offer" in record.reason
    assert checks.executed == 0 and checks.compiled_only == 1 and checks.passed
    assert "1 compiled only (halve_kernel: needs cl_khr_fp16" in how_executed(checks)


def test_a_kernel_without_its_unscheduled_primfunc_is_compiled_only():
    func = _elementwise("double", "float32")
    scheduled, sources = _scheduled({"double": func})
    checks = execute_module(scheduled, None, sources, MALI)
    (record,) = checks.per_kernel
    assert record.status == "compiled_only" and "no host reference" in record.reason
