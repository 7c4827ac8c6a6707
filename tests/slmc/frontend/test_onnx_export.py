"""slmc graph -> ONNX with torch's dynamo exporter, checked with ONNX Runtime against ``graph.run``."""

import numpy as np
import onnx
import pytest
import torch

from slmc.errors import InputError
from slmc.graph.ir import trace
from slmc.models import tiny_lm
from slmc.frontend.onnx_export import export_onnx
from slmc.frontend.onnx_import import load_onnx_model, onnx_sample_inputs, run_onnxruntime

# ONNX Runtime against eager graph.run on tiny-lm, all outputs (logits, keys, values):
# measured max abs error 8.3e-7 (fp32 weights) and 7.2e-7 (after cast_weights, fp16 weights).
ATOL = 1e-4


@pytest.fixture(scope="module")
def graph():
    return trace(tiny_lm.build())


@pytest.fixture(scope="module")
def exported(graph, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny-lm.onnx"
    return path, export_onnx(graph, path)


def max_error_against_graph(path, graph, dim_values, seed=0):
    worst = 0.0
    for sample in onnx_sample_inputs(path, count=2, dim_values=dim_values, seed=seed):
        reference = graph.run(*[torch.from_numpy(a) for a in sample])
        actual = run_onnxruntime(path, sample)
        assert len(actual) == len(reference)
        for got, want in zip(actual, reference):
            assert got.shape == tuple(want.shape)
            worst = max(worst, float(np.max(np.abs(got - want.numpy()))))
    return worst


def test_report_describes_the_file(exported, graph):
    path, report = exported
    assert report["opset"] == 18 and report["path"] == str(path)
    assert report["bytes"] == path.stat().st_size and report["external_data"] == []
    assert report["weight_bytes"] > 1_000_000 and report["initializers"] > 0 and report["nodes"] > 0
    assert [i["name"] for i in report["inputs"]] == list(graph.input_names)
    assert report["inputs"][0]["dtype"] == "int64" and report["outputs"][0]["dtype"] == "float32"
    if graph.output_names:
        assert [o["name"] for o in report["outputs"]] == list(graph.output_names)
    # the dynamic dims keep their torch.export.Dim names
    dims = sorted({d.__name__ for spec in graph.dynamic_shapes for d in dict(spec or {}).values()})
    assert report["dynamic_dims"] == dims
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def test_onnxruntime_matches_graph_run_at_two_sizes(exported, graph):
    path, report = exported
    first = {name: 16 for name in report["dynamic_dims"]}
    second = {name: 3 + 7 * i for i, name in enumerate(report["dynamic_dims"])}
    assert max_error_against_graph(path, graph, first) <= ATOL
    assert max_error_against_graph(path, graph, second, seed=1) <= ATOL


def test_transformed_graph_exports_with_its_weights(graph, host_target, tmp_path):
    from slmc.spec.pass_registry import PassContext, get_pass

    definition = get_pass("cast_weights")
    outcome = definition.run(graph.clone(), definition.config(), PassContext(host_target))
    path = tmp_path / "fp16.onnx"
    report = export_onnx(outcome.graph, path)
    dtypes = {t.data_type for t in onnx.load(str(path)).graph.initializer}
    assert onnx.TensorProto.FLOAT16 in dtypes
    assert report["weight_bytes"] < 0.6 * graph.weight_bytes()
    assert max_error_against_graph(path, outcome.graph, {name: 9 for name in report["dynamic_dims"]}) <= ATOL


def test_weights_go_to_external_data_above_the_threshold(graph, tmp_path, monkeypatch):
    monkeypatch.setattr("slmc.frontend.onnx_export.EXTERNAL_DATA_THRESHOLD", 0)  # as if the weights exceeded 2 GB
    path = tmp_path / "big.onnx"
    report = export_onnx(graph, path)
    assert report["external_data"] == ["big.onnx.data"]
    assert path.stat().st_size < 200_000 < report["bytes"]
    assert max_error_against_graph(path, graph, {name: 5 for name in report["dynamic_dims"]}) <= ATOL
    program = load_onnx_model(path)  # the importer reads the external data too
    assert sum(w.nbytes for w in program.weights) > 1_000_000


def test_destination_that_is_a_directory_is_an_input_error(graph, tmp_path):
    with pytest.raises(InputError, match="not a file"):
        export_onnx(graph, tmp_path)
