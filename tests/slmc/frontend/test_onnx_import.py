"""ONNX file -> TVM Relax (weights detached) -> slmc's build -> VM, compared with ONNX Runtime."""

import numpy as np
import onnx
import pytest
import tvm
import tvm_ffi
from onnx import TensorProto, helper
from tvm import relax

from slmc.errors import InputError, LoweringError, ModelError
from slmc.graph.ir import trace
from slmc.backend.lowering import RelaxProgram, build, export_library
from slmc.models import tiny_lm
from slmc.frontend.onnx_export import export_onnx
from slmc.frontend.onnx_import import (
    load_onnx_model,
    onnx_sample_inputs,
    onnx_signature,
    resolve_dim_values,
    run_onnxruntime,
)
from slmc.spec.target import load_target

# The TVM build against ONNX Runtime on the exported tiny-lm, all outputs (logits, keys, values):
# measured max abs error 1.3e-6 at tokens=past=16, 7.2e-7 at (1, 37), 1.1e-6 at (40, 1).
ATOL = 1e-4


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny-lm.onnx"
    export_onnx(trace(tiny_lm.build()), path)
    return path


@pytest.fixture(scope="module")
def program(onnx_file):
    return load_onnx_model(onnx_file)


@pytest.fixture(scope="module")
def executable(program):
    return build(program, load_target("host"))


def run_vm(vm, program, sample):
    """As slmc/artifact/runtime.py calls ``main``: the inputs, then every weight in order."""
    weights = [tvm.runtime.tensor(w) for w in program.weights]
    result = vm["main"](*[tvm.runtime.tensor(a) for a in sample], *weights)
    outs = list(result) if isinstance(result, (tvm_ffi.Array, list, tuple)) else [result]
    return [o.numpy() for o in outs]


def max_error(vm, program, path, dim_values, seed=0):
    worst = 0.0
    for sample in onnx_sample_inputs(path, count=2, dim_values=dim_values, seed=seed):
        actual, reference = run_vm(vm, program, sample), run_onnxruntime(path, sample)
        assert [a.shape for a in actual] == [r.shape for r in reference]
        worst = max(worst, *(float(np.max(np.abs(a - r))) for a, r in zip(actual, reference)))
    return worst


def test_program_has_the_shape_of_to_relax(program):
    assert isinstance(program, RelaxProgram)
    main = program.module["main"]
    assert program.num_inputs == 3 == int(main.attrs["num_input"])
    assert len(main.params) == program.num_inputs + len(program.weights) == program.num_inputs + len(program.weight_names)
    assert len(set(program.weight_names)) == len(program.weight_names) and "embed.weight" in program.weight_names
    assert all(isinstance(w, np.ndarray) and w.size >= 64 for w in program.weights)
    assert sum(w.nbytes for w in program.weights) > 1_000_000  # the weights are not in the module
    assert "fx passes do not apply" in program.notes[0]
    assert any(n.startswith("symbolic dims kept dynamic") for n in program.notes)


def test_tvm_build_matches_onnxruntime_at_several_lengths(executable, program, onnx_file):
    vm = relax.VirtualMachine(executable, tvm.cpu())
    assert max_error(vm, program, onnx_file, None) <= ATOL  # defaults: tokens = past = 16
    assert max_error(vm, program, onnx_file, {"tokens": 1, "past": 37}, seed=1) <= ATOL  # decode step
    assert max_error(vm, program, onnx_file, {"tokens": 40, "past": 1}, seed=2) <= ATOL  # prefill


def test_exported_library_runs(executable, program, onnx_file, tmp_path):
    export_library(executable, load_target("host"), tmp_path / "model.so")
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(tmp_path / "model.so")), tvm.cpu())
    assert max_error(vm, program, onnx_file, {"tokens": 3, "past": 5}) <= ATOL


def test_signature_in_manifest_format(onnx_file):
    sig = onnx_signature(onnx_file)
    assert sig["inputs"][0] == {"name": "input_ids", "dtype": "int64", "shape": [1, "tokens"]}
    assert sig["inputs"][1]["shape"] == [2, 1, 4, "past", 32] and sig["inputs"][1]["dtype"] == "float32"
    assert sig["outputs"][0] == {"name": "logits", "dtype": "float32", "shape": [1, "tokens", 256]}
    assert sig["dynamic_dims"] == {"tokens": [1, None], "past": [1, None]}
    assert onnx_signature(onnx_file, {"past": 8})["inputs"][2]["shape"] == [2, 1, 4, 8, 32]


def test_sample_inputs(onnx_file):
    assert resolve_dim_values(onnx_file) == {"tokens": 16, "past": 16}
    ids, keys, values = onnx_sample_inputs(onnx_file, dim_values={"tokens": 5})[0]
    assert ids.dtype == np.int64 and ids.shape == (1, 5) and 0 <= ids.min() and ids.max() < 256  # embedding rows
    assert keys.dtype == np.float32 and keys.shape == values.shape == (2, 1, 4, 16, 32)
    a, b = onnx_sample_inputs(onnx_file, count=2, seed=3)
    again = onnx_sample_inputs(onnx_file, count=1, seed=3)[0]
    assert all(np.array_equal(x, y) for x, y in zip(a, again)) and not np.array_equal(a[1], b[1])
    with pytest.raises(ModelError, match="seq_len"):
        onnx_sample_inputs(onnx_file, dim_values={"seq_len": 4})
    with pytest.raises(ModelError, match="positive integer"):
        onnx_sample_inputs(onnx_file, dim_values={"tokens": 0})


def test_static_dims_pin_the_module_shapes(onnx_file):
    # A decode-only module (one token per call). Pinning tokens=4 instead fails in TVM 0.27's
    # build (RewriteDataflowReshape cannot prove (past + 4) * 32 divisible by past + 4).
    pinned = load_onnx_model(onnx_file, static_dims={"tokens": 1})
    shapes = [[int(d.value) if hasattr(d, "value") else str(d) for d in p.ty.shape] for p in pinned.module["main"].params[:3]]
    assert shapes == [[1, 1], [2, 1, 4, "past", 32], [2, 1, 4, "past", 32]]
    assert "dims pinned by static_dims: tokens=1" in pinned.notes
    vm = relax.VirtualMachine(build(pinned, load_target("host")), tvm.cpu())
    assert max_error(vm, pinned, onnx_file, {"tokens": 1, "past": 9}) <= ATOL


def test_unnamed_dims_and_batch_default(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", None, 8])
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 8], np.eye(8, dtype=np.float32).ravel() * 2)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", None, 8])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                              "g", [x], [y], initializer=[w])
    path = tmp_path / "relu.onnx"
    # IR version 10: onnx 1.23's default (14) is newer than ONNX Runtime 1.31 reads (13)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))
    sig = onnx_signature(path)
    assert sig["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", "x_dim1", 8]}]
    assert sig["outputs"] == [{"name": "y", "dtype": "float32", "shape": ["batch", "y_dim1", 8]}]
    assert resolve_dim_values(path) == {"batch": 1, "x_dim1": 16}
    program = load_onnx_model(path)
    assert program.weight_names == ["w"] and program.num_inputs == 1
    vm = relax.VirtualMachine(build(program, load_target("host")), tvm.cpu())
    assert max_error(vm, program, path, {"batch": 2, "x_dim1": 5}) <= ATOL


def test_onnxruntime_rejects_wrong_input_count(onnx_file):
    with pytest.raises(InputError, match="takes 3 inputs"):
        run_onnxruntime(onnx_file, [np.zeros((1, 2), np.int64)])


# --- files that are not usable ONNX models --------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_onnx_model(tmp_path / "nope.onnx")


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.999])
def test_truncated_file(onnx_file, tmp_path, fraction):
    data = onnx_file.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelError, match=r"truncated\.onnx is not a valid ONNX file \(corrupt or truncated"):
        load_onnx_model(path)


@pytest.mark.parametrize("content", [b"this is a text file, not a model\n" * 8, b"", b"\x08\x07"])
def test_file_that_is_not_onnx(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)  # text; empty; a valid protobuf (ir_version 7) with no graph
    with pytest.raises(ModelError, match="model.onnx"):
        load_onnx_model(path)


def _tiny_model(nodes, inputs, outputs, path):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs), opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(path))
    return path


def test_checker_failure(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    path = _tiny_model([helper.make_node("Add", ["x", "undefined"], ["y"])], [x], [y], tmp_path / "bad.onnx")
    with pytest.raises(ModelError, match=r"bad\.onnx fails the ONNX checker.*undefined"):
        load_onnx_model(path)


def test_operator_tvm_cannot_convert_is_a_lowering_error(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    path = _tiny_model([helper.make_node("Det", ["x"], ["y"])], [x], [y], tmp_path / "det.onnx")
    with pytest.raises(LoweringError, match="Det"):
        load_onnx_model(path)
