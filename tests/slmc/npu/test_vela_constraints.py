"""Vela's refusals carry Vela's documented constraints for the refused TOSA operator, not a generic reason."""

import pytest

from npu_helpers import integer_division_graph
from slmc.npu.vela import compile_tosa
from slmc.npu.vela_constraints import refusal_record, tosa_operator, tosa_support
from slmc.spec.target import load_target


def test_an_operator_ethos_u55_never_runs_is_reported_as_unsupported_by_name(tmp_path):
    source = tmp_path / "divide.tosa"
    source.write_bytes(integer_division_graph())
    vela = load_target("ethos-u55").npu.vela
    result = compile_tosa(source, vela, tmp_path / "out")
    record = refusal_record(0, "divide", ["INTDIV"], result, vela.accelerator_config)
    assert record["operator"] == "Div" and record["tosa_operator"] == "INTDIV" and record["supported_by_vela"] is False
    assert record["vela_message"] == "Non-passthrough operation (Div) could not run on NPU"
    assert "TOSA INTDIV is not among the" in record["reason"] and "supports on Ethos-U55 and Ethos-U65" in record["reason"]


def test_the_u55_report_lists_conv2d_with_its_channel_limit():
    support = tosa_support("ethos-u55-256")
    assert support.family == "Ethos-U55 and Ethos-U65" and {"CONV2D", "RESCALE", "MATMUL"} <= support.supported
    assert "INTDIV" not in support.supported
    assert "Tensor axis: NHW any, C in range 1..65536" in support.specific["CONV2D"]
    assert tosa_support("ethos-u65-512") == support


def test_the_u85_report_states_its_baseline_and_exceptions():
    support = tosa_support("ethos-u85-256")
    assert support.supported is None and "TOSA Profile: PRO-INT" in "\n".join(support.generic)
    assert any("TRANSPOSE_CONV2D with dynamic weights" in line for line in support.generic)


@pytest.mark.parametrize(("vela_name", "graph", "expected"), [("Conv2D", ["CONV2D", "RESCALE"], "CONV2D"),
                                                               ("Div", ["INTDIV"], "INTDIV"),
                                                               ("Add", ["CONV2D", "RESCALE"], None), (None, ["CONV2D"], None)])
def test_vela_operator_types_match_the_graphs_tosa_operators(vela_name, graph, expected):
    assert tosa_operator(vela_name, graph) == expected
