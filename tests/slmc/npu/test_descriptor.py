import pytest

from slmc.errors import TargetError
from slmc.spec.target import descriptor_from_document, load_target
from slmc.spec.yaml_source import parse_yaml

NPU = """name: n
kind: {kind}
tvm: {{kind: llvm}}
dtypes: {{weights: [{dtype}], activations: [int8]}}
quantization: {{schemes: [w8a8]}}
memory: {{ram_bytes: 1000000{sram}}}
{npu}"""
SECTION = "npu: {macs_per_cycle: 256, clock_hz: 1000000000, rounding: half_up}"


def _load(kind="npu", dtype="int8", sram=", sram_bytes: 65536", npu=SECTION):
    return descriptor_from_document(parse_yaml(NPU.format(kind=kind, dtype=dtype, sram=sram, npu=npu), "<test>"))


@pytest.mark.parametrize("name,macs,vela", [("generic-int8-npu", 256, None), ("ethos-u65", 512, "ethos-u65-512"),
                                            ("ethos-u55", 256, "ethos-u55-256"), ("ethos-u85", 256, "ethos-u85-256")])
def test_builtin_npu_descriptors(name, macs, vela):
    target = load_target(name)
    assert target.kind == "npu" and target.npu.macs_per_cycle == macs and target.memory.sram_bytes
    assert target.supports_op("linear") and target.quantization.schemes == ["w8a8"]
    assert target.npu.tosa_profile == "PRO-INT"
    assert (target.npu.vela.accelerator_config if target.npu.vela else None) == vela


def test_valid_npu_descriptor():
    assert _load().npu.rounding == "half_up"


@pytest.mark.parametrize("changes,message", [
    ({"npu": ""}, "'npu' section is required"),
    ({"kind": "cpu"}, "not allowed for other kinds"),
    ({"sram": ""}, "memory.sram_bytes is not set"),
    ({"dtype": "int4"}, "dtypes.weights lacks int8"),
    ({"npu": "npu: {macs_per_cycle: 0, clock_hz: 1, rounding: half_up}"}, "macs_per_cycle"),
    ({"npu": "npu: {macs_per_cycle: 8, clock_hz: 1, rounding: stochastic}"}, "rounding"),
    ({"npu": "npu: {macs_per_cycle: 8, clock_hz: 1000, rounding: half_up, vela: {accelerator_config: ethos-u55-64, "
             "system_config: s, memory_mode: m}}"}, "set tosa_profile"),
    ({"npu": "npu: {macs_per_cycle: 8, clock_hz: 1000, rounding: half_up, tosa_profile: PRO-INT, vela: "
             "{accelerator_config: ethos-u99-64, system_config: s, memory_mode: m}}"}, "accelerator_config"),
    ({"npu": "npu: {macs_per_cycle: 8, clock_hz: 1000, rounding: half_away_from_zero, tosa_profile: PRO-INT}"},
     "no TOSA RESCALE rounding mode"),
])
def test_invalid_npu_descriptors_are_typed_errors(changes, message):
    with pytest.raises(TargetError, match=message) as info:
        _load(**changes)
    assert info.value.exit_code == 2
