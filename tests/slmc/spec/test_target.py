import pytest

from slmc.errors import TargetError, TargetNotFoundError
from slmc.spec.target import builtin_target_names, load_target, machine_arch


def test_builtin_names():
    assert {"host", "arm-cortex-a76"} <= set(builtin_target_names())


def test_host_native_fields_are_resolved():
    host = load_target("host")
    assert isinstance(host.tvm.mcpu, str) and host.tvm.mcpu != "native"
    assert isinstance(host.tvm.num_cores, int) and host.tvm.num_cores >= 1
    assert isinstance(host.memory.ram_bytes, int) and host.memory.ram_bytes > 2**28
    assert host.compute.vector_width_bits in (128, 256, 512)
    assert host.runs_here()[0]
    assert host.triple_arch == machine_arch()


def test_aarch64_descriptor_builds_a_tvm_target_and_does_not_run_here():
    arm = load_target("arm-cortex-a76")
    assert arm.tvm.to_tvm_dict() == {
        "kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a76",
        "num-cores": 4, "mattr": ["+neon", "+dotprod", "+fullfp16"],
    }
    target = arm.tvm_target()
    assert str(target.attrs["mtriple"]) == "aarch64-linux-gnu"
    if machine_arch() != "aarch64":
        runs, why = arm.runs_here()
        assert not runs and "aarch64" in why


def test_user_descriptor_by_path(tmp_path):
    text = load_target("arm-cortex-a76").model_dump_json()
    path = tmp_path / "mine.yaml"
    path.write_text(text)  # JSON is YAML
    assert load_target(path).name == "arm-cortex-a76"
    assert load_target(str(path)).kind == "cpu"


@pytest.mark.parametrize(
    "patch, path, needle",
    [
        ({"kind": "fpga"}, "kind", "'cpu', 'gpu' or 'npu'"),
        ({"colour": "red"}, "colour", "unknown key"),
        ({"memory": {"ram_bytes": -1}}, "memory.ram_bytes", "greater than or equal to 1024"),
        ({"tvm": {"kind": "llvm", "mattr": ["neon"]}}, "tvm", "must start with '+' or '-'"),
        ({"quantization": {"group_sizes": [3]}}, "quantization.group_sizes.0", "greater than or equal to 8"),
        ({"sparsity": {"patterns": ["3:7"]}}, "sparsity.patterns.0", "'unstructured', '2:4' or '4:8'"),
    ],
)
def test_bad_descriptor_fields(tmp_path, patch, path, needle):
    import yaml

    data = load_target("arm-cortex-a76").model_dump(mode="json")
    data.update(patch)
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(TargetError) as err:
        load_target(file)
    found = {p.path: p for p in err.value.problems}
    assert path in found, found
    assert needle in found[path].message
    assert found[path].line is not None
    assert str(file) in str(err.value) and err.value.exit_code == 2


def test_empty_and_non_mapping_descriptors(tmp_path):
    for text in ("", "- 1\n"):
        file = tmp_path / "d.yaml"
        file.write_text(text)
        with pytest.raises(TargetError, match="expected a mapping"):
            load_target(file)


def test_unknown_target_lists_builtins():
    with pytest.raises(TargetNotFoundError) as err:
        load_target("pixel-99")
    assert "host" in str(err.value) and "arm-cortex-a76" in str(err.value) and err.value.exit_code == 2


@pytest.mark.parametrize("dims, needle", [([1024, 1024, 1024, 1], "at most 3"), ([], "at least 1"), ([0, 4, 4], "greater than or equal to 1")])
def test_bad_max_workgroup_dims(tmp_path, dims, needle):
    import yaml

    data = load_target("mali-g710").model_dump(mode="json")
    data["limits"]["max_workgroup_dims"] = dims
    file = tmp_path / "gpu.yaml"
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(TargetError) as err:
        load_target(file)
    assert any(p.path.startswith("limits.max_workgroup_dims") and needle in p.message for p in err.value.problems), err.value


def test_tvm_dict_adds_gpu_limits_only_for_gpu_kinds():
    arm, mali = load_target("arm-cortex-a76"), load_target("mali-g710")
    assert arm.tvm_dict() == arm.tvm.to_tvm_dict()  # CPU: unchanged
    tiny = mali.model_copy(update={"limits": mali.limits.model_copy(update={"max_workgroup_size": 64})})
    assert tiny.tvm_dict()["max_num_threads"] == tiny.tvm_dict()["max_threads_per_block"] == 64
    assert tiny.tvm_dict()["max_shared_memory_per_block"] == 32768
    assert int(tiny.tvm_target().attrs["max_threads_per_block"]) == 64


@pytest.mark.parametrize("name, accepted", [("arm-cortex-a76", True), ("mali-g710", False)])
def test_the_vms_compiled_mode_is_asked_of_a_kind_whose_backend_runs_it(tmp_path, name, accepted):
    """``vm: compiled`` (TVM's exec_mode "compiled") for a cpu target; a gpu descriptor asking for it is refused,
    naming the field and the kinds that have it (``compiled_vm``)."""
    import yaml

    data = load_target(name).model_dump(mode="json")
    assert "vm" not in data  # the default is left out (manifests of bytecode builds keep their older shape)
    data["vm"] = "compiled"
    file = tmp_path / "vm.yaml"
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    if accepted:
        target = load_target(file)
        assert target.vm == "compiled" and target.model_dump(mode="json")["vm"] == "compiled"
        return
    with pytest.raises(TargetError) as err:
        load_target(file)
    assert "vm: 'compiled'" in str(err.value) and "'cpu'" in str(err.value) and "'gpu'" in str(err.value)
