"""The ONNX Runtime bench engines, all from one export of the benchmark model (``slmc.frontend.onnx_export``).

``ort-fp32``: the export as is. ``ort-int8``: ``onnxruntime.quantization.quantize_dynamic`` (int8
weights, activations quantized per call; Jacob et al., CVPR 2018). ``ort-int4``: ``MatMulNBits``
from ``onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer`` with 4-bit symmetric
blocks of 32 along K and ONNX Runtime's default accuracy level (fp32 compute). Each session is
ONNX Runtime's default CPU session (its own intra-op pool, spinning) unless a common thread policy
sets the threads and turns spinning off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slmc.bench.decode_bytes import onnx_decode_bytes
from slmc.bench.prepare import Preparation
from slmc.bench.thread_policy import ThreadPolicy
from slmc.bench.timing import StepTimer
from slmc.graph.kv_cache import KVCacheSpec

INT4_BLOCK = 32


def _size(folder: Path, stem: str) -> int:
    return sum(f.stat().st_size for f in folder.glob(f"{stem}*"))


def _read(path: Path) -> dict[str, Any]:
    """The bytes a decode step reads of the model's initializers (``slmc.bench.decode_bytes``)."""
    read = onnx_decode_bytes(path)
    return {"weight_bytes": read.weight_bytes, "decode_bytes": read.to_json()}


def prepare_fp32(prep: Preparation) -> dict[str, Any]:
    path, report = prep.onnx()
    return {**prep.common(), "onnx": str(path), "onnx_bytes": report["bytes"], **_read(path)}


def prepare_int8(prep: Preparation) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path, report = prep.onnx()
    out = path.parent / "model-int8.onnx"
    quantize_dynamic(str(path), str(out), weight_type=QuantType.QInt8, use_external_data_format=bool(report["external_data"]))
    return {**prep.common(), "onnx": str(out), "onnx_bytes": _size(out.parent, "model-int8.onnx"), **_read(out)}


def prepare_int4(prep: Preparation) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    path, report = prep.onnx()
    out = path.parent / "model-int4.onnx"
    quantizer = MatMulNBitsQuantizer(onnx.load(str(path)), bits=4, block_size=INT4_BLOCK, is_symmetric=True)
    quantizer.process()
    quantizer.model.save_model_to_file(str(out), use_external_data_format=bool(report["external_data"]))
    nodes = [n.op_type for n in onnx.load(str(out), load_external_data=False).graph.node]
    return {**prep.common(), "onnx": str(out), "onnx_bytes": _size(out.parent, "model-int4.onnx"),
            "matmul_nbits_nodes": nodes.count("MatMulNBits"), "matmul_nodes_left_fp32": nodes.count("MatMul"),
            "block_size": INT4_BLOCK, **_read(out)}


def open_timer(info: dict[str, Any], policy: ThreadPolicy) -> StepTimer:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if policy.threads is not None:
        options.intra_op_num_threads = policy.threads
    if policy.passive:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(info["onnx"], options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def logits(ids: Any, keys: Any, values: Any) -> Any:
        return session.run(None, dict(zip(names, (ids, keys, values))))[0]

    threading = {"intra_op_threads": policy.threads or "ONNX Runtime default (one per physical core)",
                 "spinning": not policy.passive}
    return StepTimer(logits, KVCacheSpec(**info["kv"]), threading)
