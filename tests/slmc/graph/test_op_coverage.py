"""slmc.graph.op_coverage: an op the target does not execute is bad input (exit 2) naming node and op."""

import json
import shutil
import subprocess

import pytest
import yaml

from slmc.errors import TargetError
from slmc.graph.ir import op_name
from slmc.graph.op_coverage import check_op_coverage
from slmc.spec.target import load_target

MALI = load_target("mali-g710")


def with_ops(target, ops, **update):
    return target.model_copy(update={"name": "listed-ops", "ops": target.ops.model_copy(update={"supported": ops}), **update})


def graph_ops(graph):
    return sorted({op_name(n) for n in graph.op_nodes()} - {"getitem"})


def test_all_and_a_complete_list_pass(tiny_lm_graph):
    check_op_coverage(tiny_lm_graph, MALI, "tracing")  # ops.supported: all
    check_op_coverage(tiny_lm_graph, with_ops(MALI, graph_ops(tiny_lm_graph)), "tracing")


def test_a_missing_op_names_the_node_and_the_op(tiny_lm_graph):
    ops = graph_ops(tiny_lm_graph)
    assert "linear" in ops
    target = with_ops(MALI, [op for op in ops if op != "linear"])
    with pytest.raises(TargetError) as err:
        check_op_coverage(tiny_lm_graph, target, "tracing")
    (problem,) = err.value.problems
    first = next(n.name for n in tiny_lm_graph.op_nodes() if op_name(n) == "linear")
    assert problem.path == "ops.supported"
    assert f"graph node '{first}'" in problem.message and "calls op 'linear'" in problem.message
    assert "after tracing" in problem.message and "listed-ops" in problem.message
    assert err.value.exit_code == 2


def test_npu_targets_are_not_checked_here(tiny_lm_graph):
    npu = with_ops(MALI, ["linear"], kind="npu")  # ops an NPU lacks fall back to the CPU
    check_op_coverage(tiny_lm_graph, npu, "tracing")


def slmc_cli(*args, cwd):
    exe = shutil.which("slmc") or pytest.fail("the slmc console script is not installed (pip install -e .)")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_cli_gpu_descriptor_without_an_op_exits_2(tmp_path, tiny_lm_graph):
    data = MALI.model_dump(mode="json")
    data.update(name="mali-no-softmax")
    data["ops"]["supported"] = [op for op in graph_ops(tiny_lm_graph) if op != "softmax"]
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(data))
    result = slmc_cli("compile", "-m", "tiny-lm", "-t", "gpu.yaml", "-o", "out", "--json", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "TargetError"
    (problem,) = error["problems"]
    assert "calls op 'softmax'" in problem["message"] and "graph node '" in problem["message"]
    assert not (tmp_path / "out").exists()
