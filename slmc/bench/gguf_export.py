"""A Hugging Face Llama or Qwen2 checkpoint as a GGUF file for llama.cpp (the ``llama-cpp`` bench engines).

``write_gguf(folder, out, qtype)`` reads ``config.json`` and the ``*.safetensors`` of ``folder`` --
the tensors slmc compiles for that model -- and writes them with the ``gguf`` package's writer under
the llama.cpp architecture ``ARCHITECTURES`` registers for the checkpoint's class:

- ``LlamaForCausalLM`` -> ``llama``: ``token_embd``, ``blk.N.attn_q/k/v/output``, ``ffn_gate/up/down``,
  ``attn_norm``/``ffn_norm``, ``output_norm``, ``output``. llama.cpp's ``llama`` graph rotates adjacent
  pairs (``LLAMA_ROPE_TYPE_NORM``) and Hugging Face rotates halves of each head (``rotate_half``), so Q
  and K rows are permuted as llama.cpp's ``convert_hf_to_gguf.py`` does (``LlamaModel.permute``,
  ``conversion/llama.py``); the permutation makes the two the same function.
- ``Qwen2ForCausalLM`` -> ``qwen2`` (``gguf.MODEL_ARCH.QWEN2``): the same tensor names plus the Q/K/V
  biases ``blk.N.attn_q/k/v.bias`` (fp32). llama.cpp ropes ``qwen2`` NEOX-style
  (``llama_model_rope_type`` in ``src/llama-model.cpp`` returns ``LLAMA_ROPE_TYPE_NEOX`` for
  ``LLM_ARCH_QWEN2``: pairs offset by ``n_rot/2``, Hugging Face's halves), so Q/K rows are written
  unpermuted, as ``Qwen2Model`` in ``convert_hf_to_gguf.py`` (``conversion/qwen.py``) writes them;
  ``src/models/qwen2.cpp`` loads the biases (optional there, always present in Qwen2) and falls back to
  ``token_embd`` when ``output`` is absent.

Both write the metadata ``TextModel.set_gguf_parameters`` writes (context, embedding, feed-forward
length, head counts, rope freq base, RMS-norm eps; the references are llama.cpp's sources vendored by
llama-cpp-python 0.3.36, the version the bench runs). Matmul weights and the embedding are quantized
with ``gguf.quants`` (``Q4_0``: 32 weights share one fp16 scale, 4.5 bits per weight; ``Q8_0``: 8.5
bits; ``F32``: unquantized); norms and biases stay fp32. A tied head is written once (llama.cpp reads
``token_embd`` for the output when ``output`` is absent). The file carries no tokenizer
(``tokenizer.ggml.model = "none"``, ``vocab_size`` dummy tokens): the benchmark feeds token ids.

Preconditions: a registered architecture (``ModelError`` naming ``architectures`` otherwise) with plain
RoPE (no rope scaling) and full attention in every layer; a Llama without biases, a Qwen2 with Q/K/V
biases and no other; no checkpoint tensor left unwritten (``ModelError`` naming it); every quantized
row a multiple of 32 long; the ``gguf`` package installed (the ``bench`` extra; ``InputError`` naming
it otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slmc.errors import InputError, ModelError

QTYPES = ("Q4_0", "Q8_0", "F32")
BLOCK = 32


def _gguf() -> Any:
    try:
        import gguf
    except ImportError as exc:
        raise InputError("the llama.cpp bench engines need the 'gguf' package: pip install -e '.[bench]'") from exc
    return gguf


def rope_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a Q or K projection from halves-rotation order to pairs-rotation order (per head)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def rope_halves(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a Q or K projection for a NEOX-rope llama.cpp graph: already in Hugging Face's halves order."""
    return weight


def _refuse_llama_biases(path: Path, config: dict[str, Any]) -> None:
    for field in ("attention_bias", "mlp_bias"):
        if config.get(field):
            raise ModelError(f"{path}: field '{field}' is true; llama.cpp's 'llama' tensors here carry no biases")


def _refuse_qwen2_sliding_window(path: Path, config: dict[str, Any]) -> None:
    if config.get("use_sliding_window"):
        raise ModelError(f"{path}: field 'use_sliding_window' is true; llama.cpp's 'qwen2' graph attends to every "
                         "position (Qwen2.5 checkpoints set it false)")


@dataclass(frozen=True)
class Architecture:
    """How one Hugging Face causal-LM class becomes one llama.cpp architecture."""

    gguf_name: str  # llama.cpp's architecture name (gguf.MODEL_ARCH_NAMES)
    qk_rows: Callable[[np.ndarray, int], np.ndarray]  # Q/K weight and bias rows in the order llama.cpp ropes
    qkv_bias: bool  # the q/k/v projections carry biases (written as blk.N.attn_q/k/v.bias)
    refuse: Callable[[Path, dict[str, Any]], None]  # raises ModelError for a config field the graph lacks


ARCHITECTURES: dict[str, Architecture] = {
    "LlamaForCausalLM": Architecture("llama", rope_permute, qkv_bias=False, refuse=_refuse_llama_biases),
    "Qwen2ForCausalLM": Architecture("qwen2", rope_halves, qkv_bias=True, refuse=_refuse_qwen2_sliding_window),
}


def checkpoint_config(folder: Path) -> dict[str, Any]:
    """The fields of ``folder/config.json`` the GGUF needs, checked; ``architecture`` is its ``Architecture``."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    classes = config.get("architectures") or []
    if len(classes) != 1 or classes[0] not in ARCHITECTURES:
        known = ", ".join(f"{name} (llama.cpp '{arch.gguf_name}')" for name, arch in ARCHITECTURES.items())
        raise ModelError(f"{path}: field 'architectures' is {config.get('architectures')}; the GGUF export writes "
                         f"{known} checkpoints only")
    arch = ARCHITECTURES[classes[0]]
    arch.refuse(path, config)
    rope = config.get("rope_parameters") or {"rope_theta": config.get("rope_theta", 10000.0), "rope_type": "default"}
    if rope.get("rope_type", "default") != "default" or config.get("rope_scaling"):
        raise ModelError(f"{path}: rope type {rope.get('rope_type')!r} / rope_scaling {config.get('rope_scaling')!r}; "
                         "the GGUF export writes plain RoPE only")
    partial = [kind for kind in config.get("layer_types") or [] if kind != "full_attention"]
    if partial:
        raise ModelError(f"{path}: field 'layer_types' holds {sorted(set(partial))}; the GGUF export writes "
                         "full attention in every layer only")
    heads = config["num_attention_heads"]
    return {"architecture": arch, "hidden": config["hidden_size"], "ffn": config["intermediate_size"],
            "layers": config["num_hidden_layers"], "heads": heads,
            "kv_heads": config.get("num_key_value_heads") or heads,
            "head_dim": config.get("head_dim") or config["hidden_size"] // heads, "vocab": config["vocab_size"],
            "context": config.get("max_position_embeddings", 2048), "eps": config.get("rms_norm_eps", 1e-6),
            "rope_theta": float(rope["rope_theta"]), "tied": bool(config.get("tie_word_embeddings", False))}


class _Checkpoint:
    """The ``*.safetensors`` of a folder, read one tensor at a time as fp32 (the whole model is never resident:
    a quantized GGUF holds only its quantized blocks while it is written)."""

    def __init__(self, folder: Path):
        from safetensors import safe_open

        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise ModelError(f"{folder}: no *.safetensors weights to convert to GGUF")
        self._where = {name: handle for handle in (safe_open(str(f), framework="numpy") for f in files)
                       for name in handle.keys()}  # noqa: SIM118 (safe_open is not iterable)

    def names(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def read(self, name: str) -> np.ndarray:
        return np.ascontiguousarray(self._where[name].get_tensor(name), dtype=np.float32)


# Checkpoint entries the GGUF needs no tensor for: RoPE frequencies llama.cpp derives from rope_theta.
DERIVED_SUFFIXES = ("rotary_emb.inv_freq",)
Reader = Callable[[], np.ndarray]


def _tensors(checkpoint: _Checkpoint, cfg: dict[str, Any]) -> list[tuple[str, Reader, bool]]:
    """(GGUF name, reader of its fp32 array, quantize?) in llama.cpp's order; ``ModelError`` names a missing or an
    unwritten checkpoint tensor before any is read."""
    arch: Architecture = cfg["architecture"]
    used: set[str] = set()

    def get(name: str, heads: int | None = None) -> Reader:
        """The reader of checkpoint tensor ``name``; with ``heads``, its rows in the order llama.cpp ropes."""
        if name not in checkpoint:
            raise ModelError(f"the checkpoint has no tensor '{name}' (a tensor llama.cpp's '{arch.gguf_name}' "
                             "architecture needs)")
        used.add(name)
        if heads is None:
            return lambda: checkpoint.read(name)
        return lambda: arch.qk_rows(checkpoint.read(name), heads)

    out = [("token_embd.weight", get("model.embed_tokens.weight"), True)]
    for i in range(cfg["layers"]):
        layer, blk = f"model.layers.{i}.", f"blk.{i}."
        qkv = {"q": cfg["heads"], "k": cfg["kv_heads"], "v": None}
        out.append((blk + "attn_norm.weight", get(layer + "input_layernorm.weight"), False))
        out += [(f"{blk}attn_{proj}.weight", get(f"{layer}self_attn.{proj}_proj.weight", heads), True)
                for proj, heads in qkv.items()]
        if arch.qkv_bias:
            out += [(f"{blk}attn_{proj}.bias", get(f"{layer}self_attn.{proj}_proj.bias", heads), False)
                    for proj, heads in qkv.items()]
        out += [
            (blk + "attn_output.weight", get(layer + "self_attn.o_proj.weight"), True),
            (blk + "ffn_norm.weight", get(layer + "post_attention_layernorm.weight"), False),
            (blk + "ffn_gate.weight", get(layer + "mlp.gate_proj.weight"), True),
            (blk + "ffn_up.weight", get(layer + "mlp.up_proj.weight"), True),
            (blk + "ffn_down.weight", get(layer + "mlp.down_proj.weight"), True),
        ]
    out.append(("output_norm.weight", get("model.norm.weight"), False))
    if not cfg["tied"]:
        out.append(("output.weight", get("lm_head.weight"), True))
    tied_copy = {"lm_head.weight"} if cfg["tied"] else set()
    unwritten = sorted(k for k in checkpoint.names() if k not in used | tied_copy and not k.endswith(DERIVED_SUFFIXES))
    if unwritten:
        raise ModelError(f"checkpoint tensors {unwritten[:5]}{' ...' if len(unwritten) > 5 else ''} have no place in "
                         f"llama.cpp's '{arch.gguf_name}' architecture; the GGUF would not be the same model")
    return out


def write_gguf(folder: Path, out: Path, qtype: str) -> dict[str, Any]:
    """Write ``folder``'s checkpoint to ``out`` with matmul weights in ``qtype``; returns what was written."""
    if qtype not in QTYPES:
        raise InputError(f"GGUF quantization {qtype!r} is not one of {', '.join(QTYPES)}")
    gguf = _gguf()
    cfg = checkpoint_config(folder)
    arch: Architecture = cfg["architecture"]
    quant = getattr(gguf.GGMLQuantizationType, qtype)
    writer = gguf.GGUFWriter(str(out), arch.gguf_name)
    writer.add_name(folder.name)
    writer.add_context_length(cfg["context"])
    writer.add_embedding_length(cfg["hidden"])
    writer.add_block_count(cfg["layers"])
    writer.add_feed_forward_length(cfg["ffn"])
    writer.add_head_count(cfg["heads"])
    writer.add_head_count_kv(cfg["kv_heads"])
    writer.add_key_length(cfg["head_dim"])
    writer.add_value_length(cfg["head_dim"])
    writer.add_rope_dimension_count(cfg["head_dim"])
    writer.add_rope_freq_base(cfg["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg["eps"])
    writer.add_vocab_size(cfg["vocab"])
    writer.add_file_type({"Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0, "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                          "F32": gguf.LlamaFileType.ALL_F32}[qtype])
    writer.add_tokenizer_model("none")
    quantized = 0
    for name, read, quantize in _tensors(_Checkpoint(folder), cfg):
        array = read()
        if quantize and quant != gguf.GGMLQuantizationType.F32:
            if array.shape[-1] % BLOCK:
                raise ModelError(f"tensor {name} rows are {array.shape[-1]} long, not a multiple of {BLOCK}: "
                                 f"{qtype} cannot hold it")
            writer.add_tensor(name, gguf.quants.quantize(array, quant), raw_dtype=quant)
            quantized += 1
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"gguf": str(out), "qtype": qtype, "bytes": out.stat().st_size, "quantized_tensors": quantized,
            "gguf_architecture": arch.gguf_name, "layers": cfg["layers"], "tied_output": cfg["tied"]}
