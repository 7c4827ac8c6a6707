"""Every built-in descriptor in targets/ loads, resolves and makes a TVM target."""

import re
from importlib import resources

import pytest

from slmc.spec.target import builtin_target_names, load_target

NAMES = builtin_target_names()


def test_the_issue_6_descriptors_are_built_in():
    assert {"host", "arm-cortex-a55", "arm-cortex-a76", "adreno-740", "mali-g710"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_builtin_loads_and_makes_a_tvm_target(name):
    target = load_target(name)
    assert target.name == name
    resolved = (target.tvm.mcpu, target.tvm.num_cores, target.memory.ram_bytes, target.compute.vector_width_bits)
    assert "native" not in resolved
    tvm_target = target.tvm_target()
    assert str(tvm_target.kind.name) == target.tvm.kind


@pytest.mark.parametrize("name", NAMES)
def test_every_builtin_cites_public_sources(name):
    text = (resources.files("slmc.targets") / f"{name}.yaml").read_text(encoding="utf-8")
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert header, f"{name}.yaml has no comment header"
    if name != "host":  # host's numbers are detected on this machine ("native"), not cited
        assert any(re.search(r"source", line, re.I) for line in header), f"{name}.yaml names no sources"


def test_cortex_a55_is_the_little_core_neon_dotprod_no_i8mm():
    a55 = load_target("arm-cortex-a55")
    assert a55.kind == "cpu" and a55.triple_arch == "aarch64"
    assert a55.tvm.mcpu == "cortex-a55"
    assert {"+neon", "+dotprod"} <= set(a55.tvm.mattr) and "+i8mm" not in a55.tvm.mattr
    attrs = a55.tvm_target().attrs
    assert bool(attrs["feature.has_dotprod"]) and not bool(attrs["feature.has_matmul_i8"])
    assert a55.compute.vector_width_bits == 128


@pytest.mark.parametrize("name", ["adreno-740", "mali-g710"])
def test_gpu_descriptors_are_opencl_with_an_aarch64_host_and_their_limits_reach_tvm(name):
    gpu = load_target(name)
    assert gpu.kind == "gpu" and gpu.tvm.kind == "opencl"
    assert gpu.tvm.host is not None and gpu.tvm.host.mtriple == "aarch64-linux-gnu"
    assert gpu.triple_arch == "aarch64"  # the host side is cross-linked like arm-cortex-a76
    assert gpu.limits.max_workgroup_size == 1024 and gpu.limits.image_support is True
    assert gpu.memory.local_memory_bytes == 32768
    assert "bfloat16" not in gpu.dtypes.weights and "float16" in gpu.dtypes.activations
    assert gpu.ops.supported == "all"
    attrs = gpu.tvm_target().attrs
    assert int(attrs["max_num_threads"]) == int(attrs["max_threads_per_block"]) == 1024
    assert int(attrs["max_shared_memory_per_block"]) == 32768
    runs, why = gpu.runs_here()
    assert not runs and "opencl" in why


def test_mali_declares_per_axis_limits_adreno_does_not():
    assert load_target("mali-g710").limits.max_workgroup_dims == [1024, 1024, 1024]
    assert load_target("adreno-740").limits.max_workgroup_dims is None  # no public Adreno 740 value (see its comment)


def test_cortex_a55_builds_and_cross_links_a_kernel(tmp_path):
    import subprocess

    from tvm import relax

    from slmc.backend.lowering import RelaxProgram, build, export_library

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 64), "float32"))
    w = relax.Var("w", relax.TensorType((64, 32), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(x, w))
        bb.emit_func_output(out)
    module = bb.get()
    module["main"] = module["main"].with_attr("num_input", 1)
    a55 = load_target("arm-cortex-a55")
    executable = build(RelaxProgram(module, ["w"], [], 1), a55)
    export_library(executable, a55, tmp_path / "model.so")
    described = subprocess.run(["file", "-b", str(tmp_path / "model.so")], capture_output=True, text=True, check=True).stdout
    assert "aarch64" in described
