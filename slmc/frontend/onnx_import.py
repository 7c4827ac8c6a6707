"""ONNX files as models: read, check, convert to TVM Relax, sample inputs, an ONNX Runtime reference.

An ``.onnx`` file goes straight to TVM: ``load_onnx_model`` converts it with TVM's ONNX frontend
(``tvm.relax.frontend.onnx.from_onnx``) into the same ``RelaxProgram`` that
``slmc.backend.lowering.to_relax`` returns for a traced model (inputs first, then every weight, weights
detached as numpy arrays), so ``slmc.backend.lowering.build``, ``export_library``, the artifact files and
``slmc.load`` work on it unchanged.

Which passes apply
    None of slmc's fx passes (a recipe's ``passes:``): they rewrite a ``torch.fx`` graph, and an
    ONNX file has none (there is no ONNX -> fx importer). A recipe with passes must be rejected
    for an ONNX model rather than silently ignored. What does apply: the TVM build pipeline of
    ``slmc.backend.relax_pipeline`` (legalization fixes, fusion, dlight schedules), export for the target
    (cross-linked for aarch64), the artifact and its manifest, and verification, with ONNX
    Runtime (``run_onnxruntime``) as the reference instead of eager torch. There is no "original
    vs final" graph, so the quality gates compare ONNX Runtime with itself.

Weights
    Initializers become weight parameters of ``main`` (stored in ``weights.safetensors`` by the
    compile driver), except small ones (fewer than ``CONSTANT_MAX_ELEMENTS`` elements: shape
    tensors, axes, indices, scalars), which become constants in the library: TVM's frontend needs
    their values at conversion time anyway (it turns such a parameter into a constant and leaves
    the parameter unused). Weight names are the initializer names (minus a leading ``onnx::``);
    exporters name folded weights themselves (torch's dynamo exporter: ``val_12``).

Dynamic dimensions
    A symbolic dimension (``dim_param``, e.g. ``tokens``) stays symbolic in the compiled module:
    the artifact accepts any size there, as ONNX declares no bounds (``dynamic_dims`` in the
    signature gives ``[1, None]``). A dimension with neither a value nor a name is named
    ``<input>_dim<axis>``. ``static_dims`` pins named dimensions to a value instead (for models
    TVM cannot convert with a symbolic size).

Verification inputs (``onnx_sample_inputs``)
    Shapes come from the graph inputs; each symbolic dimension takes its value from
    ``dim_values``, else 1 for a batch-like name (``batch``, ``batch_size``, ``N``, ``B``) and 16
    for any other (sequence lengths, cache lengths). Values: float inputs standard normal; an
    integer input that indexes an initializer table through ``Gather`` (token ids into an
    embedding) uniform in ``[0, rows)``; other integer inputs ones if the name contains ``mask``,
    positions ``0..n-1`` along the last axis if it contains ``position``, else zeros; bool inputs
    True. All samples of one call have the same shapes.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import tvm
from tvm import relax

from slmc.errors import InputError, LoweringError, ModelError, exception_summary
from slmc.backend.lowering import TVM_FAILURES, RelaxProgram, detached_program

CONSTANT_MAX_ELEMENTS = 64
DEFAULT_BATCH_DIM = 1
DEFAULT_DIM = 16
BATCH_DIM_NAMES = re.compile(r"^(batch(_size)?|n|b|bs)$|batch", re.IGNORECASE)
ORT_THREADS = 2


def is_onnx_file(ref: Any) -> bool:
    """True for a model reference that names an ONNX file (a path ending in ``.onnx``)."""
    return isinstance(ref, (str, Path)) and str(ref).lower().endswith(".onnx")


# --- reading -------------------------------------------------------------------------------------


def read_onnx(path: str | Path, load_external_data: bool = True) -> onnx.ModelProto:
    """Read and check an ONNX file. Every problem is a ``ModelError`` naming the file.

    Missing file, a directory, unreadable or corrupt/truncated protobuf, missing external data,
    and ``onnx.checker`` failures (the checker runs on the path, so models over 2 GB work).
    """
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.exists():
        raise ModelError(f"ONNX model file not found: {path}")
    if not path.is_file():
        raise ModelError(f"ONNX model path is not a file: {path}")
    if path.stat().st_size == 0:
        raise ModelError(f"ONNX model file is empty: {path}")
    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except DecodeError as exc:
        raise ModelError(f"{path} is not a valid ONNX file (corrupt or truncated protobuf: {exc})") from exc
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        raise ModelError(f"cannot read ONNX file {path}: {type(exc).__name__}: {exc}") from exc
    if not model.HasField("graph") or model.ir_version == 0:
        raise ModelError(f"{path} is not a valid ONNX file: it holds no ONNX model (no graph or IR version)")
    try:
        onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, ValueError, OSError) as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        detail = " ".join(lines[:4])[:500] or type(exc).__name__
        raise ModelError(f"{path} fails the ONNX checker: {detail}") from exc
    return model


def _opset(model: onnx.ModelProto) -> int | None:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _initializer_names(model: onnx.ModelProto) -> set[str]:
    return {t.name for t in model.graph.initializer}


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real inputs (ONNX before IR 4 also lists initializers as inputs)."""
    inits = _initializer_names(model)
    return [i for i in model.graph.input if i.name not in inits]


def _dtype(value: onnx.ValueInfoProto) -> str:
    elem = value.type.tensor_type.elem_type
    if not value.type.HasField("tensor_type") or not elem:
        raise ModelError(f"ONNX value '{value.name}' is not a tensor with a known element type; "
                         "slmc supports tensor inputs and outputs only")
    return str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)))


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    """Each dim as an int or a name (unnamed unknown dims are named ``<value>_dim<axis>``)."""
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        raise ModelError(f"ONNX input/output '{value.name}' has unknown rank; slmc needs the rank of every input and output")
    dims: list[int | str] = []
    for axis, dim in enumerate(tensor.shape.dim):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
        elif dim.dim_param:
            dims.append(str(dim.dim_param))
        else:
            dims.append(f"{value.name}_dim{axis}")
    return dims


def _name_unknown_dims(model: onnx.ModelProto) -> None:
    """Give unnamed unknown input dims the names ``_dims`` reports, so TVM and slmc agree."""
    for value in _graph_inputs(model):
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if not (dim.HasField("dim_value") and dim.dim_value > 0) and not dim.dim_param:
                dim.dim_param = f"{value.name}_dim{axis}"


def _symbolic_dims(model: onnx.ModelProto) -> list[str]:
    names: list[str] = []
    for value in _graph_inputs(model):
        for d in _dims(value):
            if isinstance(d, str) and d not in names:
                names.append(d)
    return names


def _check_dim_map(model: onnx.ModelProto, values: Mapping[str, int] | None, what: str, path: Path | str) -> dict[str, int]:
    values = dict(values or {})
    known = _symbolic_dims(model)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ModelError(f"{what} names dims {unknown} that no input of {path} has; its symbolic dims are {known or 'none'}")
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ModelError(f"{what}['{name}'] must be a positive integer, got {v!r}")
    return {k: int(v) for k, v in values.items()}


def onnx_fingerprint(path: str | Path) -> str:
    """sha256 over the ONNX file and, in order, every external data file it names."""
    import hashlib

    path = Path(path)
    model = read_onnx(path, load_external_data=False)
    files = [path]
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location" and path.parent / entry.value not in files:
                    files.append(path.parent / entry.value)
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


# --- signature -----------------------------------------------------------------------------------


def _signature_of(model: onnx.ModelProto, static_dims: Mapping[str, int]) -> dict[str, Any]:
    def describe(value: onnx.ValueInfoProto) -> dict[str, Any]:
        shape = [static_dims.get(d, d) if isinstance(d, str) else d for d in _dims(value)]
        return {"name": value.name, "dtype": _dtype(value), "shape": shape}

    inputs = [describe(v) for v in _graph_inputs(model)]
    outputs = [describe(v) for v in model.graph.output]
    dynamic = {name: [1, None] for name in _symbolic_dims(model) if name not in static_dims}
    return {"inputs": inputs, "outputs": outputs, "dynamic_dims": dynamic}


def onnx_signature(path: str | Path, static_dims: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The manifest ``signature`` of an ONNX model (format of ``slmc.driver.compile._signature``).

    ``{"inputs": [{"name", "dtype", "shape"}], "outputs": [...], "dynamic_dims": {name: [1, None]}}``:
    shapes hold ints or dim names (output dims may be expressions such as ``past + tokens``, or
    names the exporter invented); ``None`` as the upper bound because ONNX declares none. Dims
    pinned by ``static_dims`` (as ``load_onnx_model`` was given them) appear as ints.
    """
    model = read_onnx(path, load_external_data=False)
    _name_unknown_dims(model)
    return _signature_of(model, _check_dim_map(model, static_dims, "static_dims", path))


# --- conversion ----------------------------------------------------------------------------------


def _embed_small_initializers(model: onnx.ModelProto) -> list[str]:
    """Turn initializers below ``CONSTANT_MAX_ELEMENTS`` into ``Constant`` nodes; returns their names."""
    small = [t for t in model.graph.initializer if int(np.prod(t.dims, dtype=np.int64)) < CONSTANT_MAX_ELEMENTS]
    if not small:
        return []
    names = {t.name for t in small}
    constants = [onnx.helper.make_node("Constant", [], [t.name], value=t, name=f"slmc_const_{i}") for i, t in enumerate(small)]
    kept_inits = [t for t in model.graph.initializer if t.name not in names]
    kept_inputs = [i for i in model.graph.input if i.name not in names]
    nodes = list(model.graph.node)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept_inits)
    del model.graph.input[:]
    model.graph.input.extend(kept_inputs)
    del model.graph.node[:]
    model.graph.node.extend(constants + nodes)
    return sorted(names)


def _shape_dict(model: onnx.ModelProto, static_dims: Mapping[str, int]) -> dict[str, list[Any]] | None:
    """Every input's shape with pinned dims as ints and one shared ``tir.Var`` per other name."""
    if not static_dims:
        return None
    variables: dict[str, tvm.tirx.Var] = {}
    shapes = {}
    for value in _graph_inputs(model):
        shape: list[Any] = []
        for d in _dims(value):
            if isinstance(d, int):
                shape.append(d)
            elif d in static_dims:
                shape.append(static_dims[d])
            else:
                shape.append(variables.setdefault(d, tvm.tirx.Var(d, "int64")))
        shapes[value.name] = shape
    return shapes


def _symbolic_range(inputs: Sequence[Any], params: Any) -> relax.Expr | None:
    """``Range`` whose bounds are shape expressions, as ``arange`` with a symbolic length.

    TVM 0.27's converter computes a dynamic ``Range``'s length through a tensor and gets a fresh
    data-dependent size (``range_len``), losing its relation to the input dims: a causal mask
    built from ``Range(0, past + tokens)`` then no longer broadcasts provably against the scores,
    the result has unknown shape and the next ``Reshape`` fails. Integer ranges whose start,
    limit and step are constants or shape expressions keep an exact symbolic length here.
    Returns None (use TVM's converter) for anything else.
    """
    from tvm.relax.frontend.onnx.onnx_frontend import get_constant

    values = []
    for item in inputs[:3]:
        item = get_constant(item, params)
        if tvm.ir.is_prim_expr(item):
            if str(getattr(item, "dtype", None) or item.ty) not in ("int32", "int64"):
                return None
            values.append(item)
        elif isinstance(item, tvm.ir.GenericConst):
            array = item.value.numpy()
            if array.size != 1 or array.dtype.kind not in "iu":
                return None
            values.append(int(array.reshape(())))
        else:
            return None
    symbolic = any(tvm.ir.is_prim_expr(v) for v in values[:2])
    if len(values) != 3 or not symbolic or not isinstance(values[2], int) or values[2] == 0:
        return None
    first = inputs[0] if not tvm.ir.is_prim_expr(inputs[0]) else None
    dtype = str(first.ty.dtype) if isinstance(first, relax.Expr) and hasattr(first.ty, "dtype") else "int64"
    return relax.op.arange(values[0], values[1], values[2], dtype)


def _importer_class() -> type:
    from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

    class SlmcOnnxImporter(ONNXGraphImporter):
        """TVM's ONNX importer with slmc's converter fixes (``_symbolic_range``)."""

        def _convert_operator(self, op_name: str, inputs: list[Any], attrs: dict, opset: int) -> Any:
            if op_name == "Range":
                fixed = _symbolic_range(inputs, [self._nodes, self._params])
                if fixed is not None:
                    return self.bb.normalize(fixed)
            return super()._convert_operator(op_name, inputs, attrs, opset)

    return SlmcOnnxImporter


def _from_onnx(model: onnx.ModelProto, shape_dict: dict[str, list[Any]] | None) -> tvm.IRModule:
    """``tvm.relax.frontend.onnx.from_onnx(model, shape_dict, keep_params_in_input=True)``, with fixes.

    Same steps as TVM's function (opset from the model's default domain), minus its checker
    call (``read_onnx`` already checked the file), with ``SlmcOnnxImporter``.
    """
    opset = _opset(model) or 1
    importer = _importer_class()(shape_dict, "float32", keep_params_in_input=True, sanitize=True)
    return importer.from_onnx(model.graph, opset)


def load_onnx_model(path: str | Path, *, static_dims: Mapping[str, int] | None = None) -> RelaxProgram:
    """Read ``path`` and convert it to Relax with the weights detached (see the module docstring).

    Raises ``ModelError`` for a file that is missing, not ONNX, corrupt or truncated, or fails the
    ONNX checker; ``LoweringError`` when TVM's ONNX frontend cannot convert the graph (the
    message lists unsupported operators).
    """
    path = Path(path)
    model = read_onnx(path)
    _name_unknown_dims(model)
    pinned = _check_dim_map(model, static_dims, "static_dims", path)
    dims = _symbolic_dims(model)
    embedded = _embed_small_initializers(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            module = _from_onnx(model, _shape_dict(model, pinned))
            module, params = relax.frontend.detach_params(module)
        except TVM_FAILURES as exc:
            raise LoweringError(f"TVM's ONNX frontend could not convert {path}: {exception_summary(exc)}") from exc
    producer = f"{model.producer_name} {model.producer_version}".strip() or "unknown producer"
    notes = [f"imported from ONNX file {path.name} (opset {_opset(model)}, IR version {model.ir_version}, {producer}); "
             "slmc's fx passes do not apply to ONNX models"]
    if embedded:
        notes.append(f"{len(embedded)} initializers under {CONSTANT_MAX_ELEMENTS} elements embedded as constants: "
                     + ", ".join(embedded[:20]) + (" ..." if len(embedded) > 20 else ""))
    free = [d for d in dims if d not in pinned]
    if free:
        notes.append("symbolic dims kept dynamic: " + ", ".join(free))
    if pinned:
        notes.append("dims pinned by static_dims: " + ", ".join(f"{k}={v}" for k, v in pinned.items()))
    seen: set[str] = set()
    for w in caught:
        text = str(w.message).strip().splitlines()[0][:300] if str(w.message).strip() else ""
        if text and text not in seen and not text.startswith("Renaming name"):
            seen.add(text)
            notes.append(f"TVM ONNX frontend: {text}")
    return detached_program(module, params, notes, str(path))


# --- sample inputs -------------------------------------------------------------------------------


def default_dim_value(name: str) -> int:
    """1 for a batch-like dim name, else 16."""
    return DEFAULT_BATCH_DIM if BATCH_DIM_NAMES.search(name) else DEFAULT_DIM


def resolve_dim_values(path: str | Path, dim_values: Mapping[str, int] | None = None) -> dict[str, int]:
    """The value of every symbolic input dim: from ``dim_values``, else ``default_dim_value``."""
    model = read_onnx(path, load_external_data=False)
    return _resolve_dim_values(model, dim_values, path)


def _resolve_dim_values(model: onnx.ModelProto, dim_values: Mapping[str, int] | None, path: Path | str) -> dict[str, int]:
    _name_unknown_dims(model)
    given = _check_dim_map(model, dim_values, "dim_values", path)
    return {name: given.get(name, default_dim_value(name)) for name in _symbolic_dims(model)}


def _index_ranges(model: onnx.ModelProto) -> dict[str, int]:
    """Input name -> number of rows of the initializer table it indexes through ``Gather``."""
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    for node in model.graph.node:  # initializers that were turned into Constant nodes by other tools
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    inits.setdefault(node.output[0], list(attr.t.dims))
    ranges: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[0] in inits:
            axis = next((int(a.i) for a in node.attribute if a.name == "axis"), 0)
            table = inits[node.input[0]]
            if table and -len(table) <= axis < len(table):
                rows = int(table[axis])
                ranges[node.input[1]] = min(ranges.get(node.input[1], rows), rows)
    return ranges


def onnx_sample_inputs(path: str | Path, count: int = 1, dim_values: Mapping[str, int] | None = None,
                       seed: int = 0) -> list[tuple[np.ndarray, ...]]:
    """``count`` input tuples (graph-input order) for verification; see the module docstring."""
    model = read_onnx(path, load_external_data=False)
    values = _resolve_dim_values(model, dim_values, path)
    ranges = _index_ranges(model)
    rng = np.random.default_rng(seed)
    specs = [(v.name, _dtype(v), [values[d] if isinstance(d, str) else d for d in _dims(v)]) for v in _graph_inputs(model)]
    samples = []
    for _ in range(count):
        sample = []
        for name, dtype, shape in specs:
            kind = np.dtype(dtype).kind
            lower = name.lower()
            if kind == "f" or dtype == "bfloat16":
                array = rng.standard_normal(shape).astype(dtype)
            elif kind == "b":
                array = np.ones(shape, dtype=bool)
            elif kind in "iu" and name in ranges:
                array = rng.integers(0, max(ranges[name], 1), size=shape).astype(dtype)
            elif kind in "iu" and "mask" in lower:
                array = np.ones(shape, dtype=dtype)
            elif kind in "iu" and "position" in lower and shape:
                array = np.broadcast_to(np.arange(shape[-1]), shape).astype(dtype)
            elif kind in "iuc":
                array = np.zeros(shape, dtype=dtype)
            else:
                raise ModelError(f"input '{name}' of {path} has dtype {dtype}, for which slmc cannot make sample inputs")
            sample.append(np.ascontiguousarray(array))
        samples.append(tuple(sample))
    return samples


# --- ONNX Runtime reference ----------------------------------------------------------------------

_SESSIONS: dict[tuple[str, int, int], Any] = {}


def _ort_failures() -> tuple[type[BaseException], ...]:
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException", "InvalidProtobuf",
             "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail")
    return (RuntimeError, ValueError, TypeError) + tuple(getattr(state, n) for n in names if hasattr(state, n))


def onnxruntime_session(path: str | Path) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU provider with 2 intra-op threads (cached per file)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ONNX model file not found: {path}")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _SESSIONS:
        options = ort.SessionOptions()
        options.intra_op_num_threads = ORT_THREADS
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except _ort_failures() as exc:
            raise ModelError(f"ONNX Runtime cannot load {path}: {type(exc).__name__}: {str(exc).strip()[:500]}") from exc
        _SESSIONS.clear()
        _SESSIONS[key] = session
    return _SESSIONS[key]


def run_onnxruntime(path: str | Path, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run the ONNX file with ONNX Runtime (CPU): the reference for an ONNX model's artifact.

    ``inputs`` in graph-input order (or by name); returns every graph output in order.
    """
    session = onnxruntime_session(path)
    names = [i.name for i in session.get_inputs()]
    if isinstance(inputs, Mapping):
        feed = {k: np.ascontiguousarray(v) for k, v in inputs.items()}
    else:
        arrays = list(inputs)
        if len(arrays) != len(names):
            raise InputError(f"{path} takes {len(names)} inputs ({names}), got {len(arrays)}")
        feed = {name: np.ascontiguousarray(a) for name, a in zip(names, arrays)}
    try:
        return list(session.run(None, feed))
    except _ort_failures() as exc:
        raise InputError(f"ONNX Runtime could not run {path}: {type(exc).__name__}: {str(exc).strip()[:500]}") from exc
