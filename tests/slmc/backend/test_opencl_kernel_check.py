"""slmc.backend.opencl_kernel_check: every generated OpenCL kernel compiled by PoCL and checked against the descriptor.

Needs PoCL (apt-get install pocl-opencl-icd) and pyopencl (the test extras), as the README's test
command installs them.
"""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from slmc.errors import KernelCheckError, ToolchainError
from slmc.graph.ir import trace
from slmc.backend.lowering import build, to_relax
from slmc.models import tiny_lm
from slmc.backend.opencl_kernel_check import (KernelReport, _compile, _dtype_violations, _violations, check_kernels, compile_kernels,
                               how, kernel_sources, pocl_compiler)
from slmc.spec.target import load_target

MALI = load_target("mali-g710")


def with_limits(target, name, limits=None, memory=None, dtypes=None):
    update = {"name": name}
    if limits:
        update["limits"] = target.limits.model_copy(update=limits)
    if memory:
        update["memory"] = target.memory.model_copy(update=memory)
    if dtypes:
        update["dtypes"] = target.dtypes.model_copy(update=dtypes)
    return target.model_copy(update=update)


@pytest.fixture(scope="module")
def mali_build():
    """tiny-lm (a 2-layer Llama-style LM with KV cache and dynamic shapes) built for mali-g710."""
    program = to_relax(trace(tiny_lm.build()))
    return build(program, MALI), program


@pytest.fixture(scope="module")
def compiled(mali_build):
    """Every kernel of the mali build compiled once by PoCL: (reports, compiler)."""
    return compile_kernels(*mali_build, MALI)


def test_every_kernel_compiles_with_pocl_within_mali_limits(mali_build, compiled):
    executable, _program = mali_build
    summary = check_kernels(*compiled, MALI)
    assert summary["kernels"] == len(kernel_sources(executable)) >= 10
    assert summary["kernels_compiled"] == summary["kernels"] and summary["not_compiled"] == []
    assert summary["compiler"].startswith("PoCL ") and " via pyopencl " in summary["compiler"]
    assert summary["violations"] == []
    assert 0 < summary["largest_workgroup"] <= 1024
    for kernel in summary["per_kernel"]:
        assert kernel["compiled"] and all(isinstance(v, int) for v in kernel["workgroup"]), kernel
        # The local memory read from TVM's device functions is what the OpenCL compiler reports.
        assert kernel["local_memory_bytes"] == kernel["compiler_local_memory_bytes"], kernel
    assert any(k["local_memory_bytes"] > 0 for k in summary["per_kernel"])  # reductions use __local
    text = how(summary)
    assert text.startswith(f"kernels compiled by an OpenCL compiler (PoCL {pocl_compiler().version} via pyopencl), "
                           f"{summary['kernels']} kernels, limits checked")
    assert "execut" not in text


def test_a_tiny_max_workgroup_size_fails_naming_kernel_and_limit(compiled, tmp_path):
    data = MALI.model_dump(mode="json")
    data.update(name="tiny-workgroups")
    data["limits"].update(max_workgroup_size=32, max_workgroup_dims=None)
    descriptor = tmp_path / "tiny.yaml"
    descriptor.write_text(yaml.safe_dump(data))
    tiny = load_target(descriptor)
    with pytest.raises(KernelCheckError) as err:
        check_kernels(*compiled, tiny)
    assert err.value.limit == "limits.max_workgroup_size" and err.value.exit_code == 1
    assert err.value.kernel.endswith("_kernel") and f"kernel '{err.value.kernel}'" in str(err.value)
    assert "the target allows 32" in str(err.value)
    report = err.value.verification
    assert report["violations"] and all(v["measured"] > 32 for v in report["violations"])
    assert err.value.to_json()["kernel"] == err.value.kernel


def test_local_memory_and_per_axis_limits(compiled):
    with pytest.raises(KernelCheckError) as err:
        check_kernels(*compiled, with_limits(MALI, "small-local", memory={"local_memory_bytes": 16}))
    assert err.value.limit == "memory.local_memory_bytes" and "bytes of local memory; the target has 16" in str(err.value)
    with pytest.raises(KernelCheckError) as err:
        check_kernels(*compiled, with_limits(MALI, "narrow-x", limits={"max_workgroup_dims": [16, 1024, 1024]}))
    assert err.value.limit == "limits.max_workgroup_dims.0" and "along x; the target allows 16" in str(err.value)


def test_images_need_image_support_and_half_needs_float16():
    no_images = with_limits(MALI, "no-images", limits={"image_support": False})
    report = KernelReport("k_kernel", [64, 1, 1], 64, 0, 0, uses_images=True)
    (violation,) = _violations(report, no_images)
    assert violation["limit"] == "limits.image_support" and "image objects" in violation["message"]
    assert _violations(report, MALI) == []
    half = KernelReport("h_kernel", [64, 1, 1], 64, 0, 0, extensions=["cl_khr_fp16"])
    fp32_only = with_limits(MALI, "fp32-only", dtypes={"weights": ["float32"], "activations": ["float32"]})
    (violation,) = _dtype_violations(half, fp32_only)
    assert violation["limit"] == "dtypes" and "float16" in violation["message"]
    assert _dtype_violations(half, MALI) == []
    (violation,) = _dtype_violations(KernelReport("d_kernel", [1, 1, 1], 1, 0, extensions=["cl_khr_fp64"]), MALI)
    assert "float64" in violation["message"]


def test_a_kernel_pocl_rejects_is_an_error_with_the_compiler_log():
    report = KernelReport("broken_kernel", [1, 1, 1], 1, 0)
    with pytest.raises(KernelCheckError) as err:
        _compile(pocl_compiler(), "broken_kernel", "__kernel void broken_kernel(__global float* a) { a[0] = undeclared; }", report)
    assert err.value.limit == "opencl_compile" and "broken_kernel" in str(err.value) and "undeclared" in str(err.value)


HALF_KERNEL = """#ifdef cl_khr_fp16
#pragma OPENCL EXTENSION cl_khr_fp16 : enable
#elif defined(cl_amd_fp16)
#pragma OPENCL EXTENSION cl_amd_fp16 : enable
#else
#error "Half precision floating point not supported by OpenCL implementation on your device."
#endif
__kernel void half_kernel(__global float* restrict out, __global half* restrict w) { out[0] = ((float)w[1]) * 2.0f; }
"""


def test_fp16_kernels_go_to_clang_when_pocl_lacks_cl_khr_fp16():
    compiler = pocl_compiler()
    if "cl_khr_fp16" in compiler.extensions:
        pytest.skip("this PoCL device offers cl_khr_fp16: half kernels are compiled by PoCL itself")
    report = KernelReport("half_kernel", [1, 1, 1], 1, 0)
    _compile(compiler, "half_kernel", HALF_KERNEL, report)
    assert report.compiled and report.compiler.startswith(f"clang-{compiler.llvm_major} OpenCL C frontend (spir64, +cl_khr_fp16)")
    broken = KernelReport("half_kernel", [1, 1, 1], 1, 0)
    with pytest.raises(KernelCheckError) as err:
        _compile(compiler, "half_kernel", HALF_KERNEL.replace("* 2.0f", "* undeclared"), broken)
    assert err.value.limit == "opencl_compile" and "undeclared" in str(err.value)
    without_clang = KernelReport("half_kernel", [1, 1, 1], 1, 0)
    _compile(replace(compiler, clang=None), "half_kernel", HALF_KERNEL, without_clang)
    assert not without_clang.compiled and "cl_khr_fp16" in without_clang.not_compiled_reason
    assert "is not installed" in without_clang.not_compiled_reason


def test_missing_pocl_is_a_toolchain_error_naming_the_package(tmp_path):
    # An ICD loader that finds no vendor file behaves like a machine without PoCL.
    code = ("from slmc.backend.opencl_kernel_check import pocl_compiler\nfrom slmc.errors import ToolchainError\n"
            "try:\n    pocl_compiler()\nexcept ToolchainError as e:\n    print('TOOLCHAIN', e)\n")
    env = {**os.environ, "OCL_ICD_VENDORS": str(tmp_path), "OPENCL_VENDOR_PATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "TOOLCHAIN" in out.stdout and "pocl-opencl-icd" in out.stdout, out.stdout + out.stderr
    assert issubclass(ToolchainError, Exception)


def slmc_cli(*args, cwd):
    exe = shutil.which("slmc") or pytest.fail("the slmc console script is not installed (pip install -e .)")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["mali-g710", "adreno-740"])
def test_fixture_lm_compiles_for_the_gpu_and_every_kernel_is_checked(tmp_path, target):
    result = slmc_cli("compile", "-m", "fixture-lm", "-t", target, "-r", "cleanup", "-o", "out", "--json",
                      cwd=tmp_path)  # fp32 kernels; without -m the CLI's default model is tiny-lm
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    verification = manifest["verification"]
    summary = verification["opencl"]
    assert verification["executed"] is False and verification["passed"] is True
    assert verification["how"].startswith(f"kernels compiled by an OpenCL compiler ({summary['compiler'].split(' via ')[0]} "
                                          f"via pyopencl), {summary['kernels']} kernels, limits checked; ")
    executed = verification["gpu_kernels"]  # issue 19: every fp32 kernel also executed on PoCL (slmc.backend.opencl_kernel_run)
    assert executed["kernels"] == executed["executed"] == summary["kernels"] and executed["passed"]
    assert f"{summary['kernels']} of {summary['kernels']} kernels executed on PoCL" in verification["how"]
    assert summary["kernels"] == summary["kernels_compiled"] > 40 and summary["violations"] == []
    assert manifest["tvm_target"]["kind"] == "opencl" and manifest["tvm_target"]["max_threads_per_block"] == 1024
    described = subprocess.run(["file", "-b", str(tmp_path / "out" / "model.so")], capture_output=True, text=True, check=True).stdout
    assert "aarch64" in described  # the host side is cross-linked


@pytest.mark.slow
def test_cli_tiny_workgroup_limit_exits_1_naming_the_kernel(tmp_path):
    data = MALI.model_dump(mode="json")
    data.update(name="tiny-workgroups")
    data["limits"]["max_workgroup_size"] = 32
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(data))
    result = slmc_cli("compile", "-m", "tiny-lm", "-t", "tiny.yaml", "-o", "out", "--json", cwd=tmp_path)
    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "KernelCheckError" and error["limit"] == "limits.max_workgroup_size"
    assert error["kernel"] in error["message"]
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.slow
def test_cli_fp16_weights_on_mali_kernels_compiled_by_clang_when_pocl_lacks_fp16(tmp_path):
    if "cl_khr_fp16" in pocl_compiler().extensions:
        pytest.skip("this PoCL device offers cl_khr_fp16")
    (tmp_path / "fp16.yaml").write_text("passes:\n  - constant_folding: {}\n  - cast_weights: {dtype: float16}\n")
    result = slmc_cli("compile", "-m", "tiny-lm", "-t", "mali-g710", "-r", "fp16.yaml", "-o", "out", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    verification = json.loads((tmp_path / "out" / "manifest.json").read_text())["verification"]
    summary = verification["opencl"]
    assert summary["kernels_compiled"] == summary["kernels"] and summary["not_compiled"] == []
    assert len(summary["kernels_compiled_by_clang"]) == summary["kernels"] - summary["kernels_compiled_by_pocl"] > 0
    assert f"compiled instead by clang-{pocl_compiler().llvm_major} OpenCL C frontend (spir64, +cl_khr_fp16)" in verification["how"]


@pytest.mark.slow
def test_int8_fixture_lm_for_mali_every_kernel_compiled(tmp_path):
    """Issue 6's acceptance: the fixture LM with an int8 recipe as OpenCL, every kernel compiled and checked."""
    recipe = Path(__file__).resolve().parents[3] / "examples" / "recipes" / "int8-rtn.yaml"
    result = slmc_cli("compile", "-t", "mali-g710", "-r", str(recipe), "-o", "out", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    summary = manifest["verification"]["opencl"]
    assert summary["kernels"] == summary["kernels_compiled"] > 40 and summary["violations"] == []
    assert all(layer["format"].startswith("int8") for layer in manifest["passes"][0]["stats"]["layers"])
    # measured: 52 kernels; all carry float16 scales, so clang-15 (PoCL's frontend) takes them (no cl_khr_fp16 in PoCL 3.1 CPU)
    print(f"mali int8: {summary['kernels']} kernels, {summary['kernels_compiled_by_pocl']} by PoCL")
