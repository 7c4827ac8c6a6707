"""The descriptor's ``compute.int8_dot``: resolved natively for ``host``, declared for Arm, and what
``cpu_schedule_passes`` hands to Int8Matmul (a target without it gets the int32-vector schedule)."""

from __future__ import annotations

import pytest
import tvm
from test_int8_matmul_rule import w8a8_kernel

import slmc.spec.target as target_module
from slmc.errors import TargetError
from slmc.schedules import cpu_schedule_passes
from slmc.spec.target import TargetDescriptor, load_target
from slmc.spec.yaml_source import parse_yaml

HOST_YAML = (target_module.resources.files("slmc.targets") / "host.yaml").read_text(encoding="utf-8")


def test_host_resolves_int8_dot_from_the_cpu_flags(host_target):
    flags = target_module._cpu_flags()
    assert host_target.compute.int8_dot == [feature for flag, feature in target_module.NATIVE_INT8_DOT.items()
                                            if flag in flags]


def test_native_int8_dot_of_an_arm_cpu(monkeypatch):
    monkeypatch.setattr(target_module, "_cpu_flags", lambda: frozenset({"fp", "asimd", "asimddp", "i8mm"}))
    resolved = target_module.descriptor_from_document(parse_yaml(HOST_YAML, "<host>"))
    assert resolved.compute.int8_dot == ["dotprod", "i8mm"]


@pytest.mark.parametrize("name", ["arm-cortex-a55", "arm-cortex-a76"])
def test_arm_descriptors_declare_dotprod_as_their_mattr_does(name):
    arm = load_target(name)
    assert arm.compute.int8_dot == ["dotprod"] and "+dotprod" in arm.tvm.mattr and "+i8mm" not in arm.tvm.mattr


def test_unknown_int8_dot_feature_is_a_typed_error():
    text = HOST_YAML.replace("int8_dot: native", "int8_dot: [avx512_vnni, sve2]")
    with pytest.raises(TargetError) as err:
        target_module.descriptor_from_document(parse_yaml(text, "<bad>"))
    assert "int8_dot" in str(err.value)


def _scheduled_script(descriptor: TargetDescriptor) -> tuple[str, list[str]]:
    notes: list[str] = []
    mod = tvm.IRModule({"main": w8a8_kernel()})
    with descriptor.tvm_target():
        mod = tvm.transform.Sequential(cpu_schedule_passes(descriptor, notes))(mod)
    return mod["main"].script(), notes


def test_schedule_passes_follow_the_descriptor_capability(host_target):
    without = host_target.model_copy(update={"compute": host_target.compute.model_copy(update={"int8_dot": []})})
    script, notes = _scheduled_script(without)
    assert "vpdpbusd" not in script and "CPU schedules: Int8Matmul 1" in notes
    if host_target.compute.int8_dot:
        script, notes = _scheduled_script(host_target)
        assert "vpdpbusd" in script or "sdot" in script
