"""Vela on a TOSA graph with an operator the Ethos-U cannot run: a refusal with Vela's reason, not a crash."""

import pytest

from npu_helpers import integer_division_graph
from slmc.npu.vela import compile_tosa
from slmc.spec.target import load_target


def test_an_operator_vela_refuses_is_reported_with_its_reason(tmp_path):
    source = tmp_path / "divide.tosa"
    source.write_bytes(integer_division_graph())
    result = compile_tosa(source, load_target("ethos-u55").npu.vela, tmp_path / "out")
    assert not result.compiled and result.refused_operator == "Div"
    assert "could not run on NPU" in result.reason


def test_a_system_config_vela_does_not_know_is_a_toolchain_error(tmp_path):
    from slmc.errors import ToolchainError
    from slmc.spec.target import Vela

    source = tmp_path / "divide.tosa"
    source.write_bytes(integer_division_graph())
    config = Vela(accelerator_config="ethos-u55-256", system_config="No_Such_System", memory_mode="Shared_Sram")
    with pytest.raises(ToolchainError, match="Vela failed on divide.tosa .*No_Such_System"):
        compile_tosa(source, config, tmp_path / "out")
