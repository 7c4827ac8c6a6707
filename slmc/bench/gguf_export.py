"""A Hugging Face Llama checkpoint as a GGUF file for llama.cpp (the ``llama-cpp`` bench engines).

``write_gguf(folder, out, qtype)`` reads ``config.json`` and the ``*.safetensors`` of ``folder`` --
the tensors slmc compiles for that model -- and writes them with the ``gguf`` package's writer under
llama.cpp's ``llama`` architecture names (``token_embd``, ``blk.N.attn_q/k/v/output``,
``ffn_gate/up/down``, ``attn_norm``/``ffn_norm``, ``output_norm``, ``output``). Matmul weights and the
embedding are quantized with ``gguf.quants`` (``Q4_0``: 32 weights share one fp16 scale, 4.5 bits per
weight; ``Q8_0``: 8.5 bits; ``F32``: unquantized); norms stay fp32. A tied head is written once
(llama.cpp reads ``token_embd`` for the output when ``output`` is absent).

Q and K rows are permuted as llama.cpp's own ``convert_hf_to_gguf.py`` does: Hugging Face rotates
halves of each head (``rotate_half``) and llama.cpp's ``llama`` graph rotates adjacent pairs; the
permutation makes the two the same function. The file carries no tokenizer (``tokenizer.ggml.model
= "none"``, ``vocab_size`` dummy tokens): the benchmark feeds token ids.

Preconditions: a ``LlamaForCausalLM`` checkpoint without biases or rope scaling (``ModelError``
otherwise, naming the field), every quantized row a multiple of 32 long, the ``gguf`` package
installed (the ``bench`` extra; ``InputError`` naming it otherwise).
"""

from __future__ import annotations

import json
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


def llama_config(folder: Path) -> dict[str, Any]:
    """The fields of ``folder/config.json`` the ``llama`` GGUF needs, checked."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    if config.get("architectures") != ["LlamaForCausalLM"]:
        raise ModelError(f"{path}: field 'architectures' is {config.get('architectures')}; the GGUF export writes "
                         "llama.cpp's 'llama' architecture from LlamaForCausalLM checkpoints only")
    for field in ("attention_bias", "mlp_bias"):
        if config.get(field):
            raise ModelError(f"{path}: field '{field}' is true; llama.cpp's 'llama' tensors here carry no biases")
    rope = config.get("rope_parameters") or {"rope_theta": config.get("rope_theta", 10000.0), "rope_type": "default"}
    if rope.get("rope_type", "default") != "default" or config.get("rope_scaling"):
        raise ModelError(f"{path}: rope type {rope.get('rope_type')!r} / rope_scaling {config.get('rope_scaling')!r}; "
                         "the GGUF export writes plain RoPE only")
    heads = config["num_attention_heads"]
    return {"hidden": config["hidden_size"], "ffn": config["intermediate_size"], "layers": config["num_hidden_layers"],
            "heads": heads, "kv_heads": config.get("num_key_value_heads") or heads,
            "head_dim": config.get("head_dim") or config["hidden_size"] // heads, "vocab": config["vocab_size"],
            "context": config.get("max_position_embeddings", 2048), "eps": config.get("rms_norm_eps", 1e-6),
            "rope_theta": float(rope["rope_theta"]), "tied": bool(config.get("tie_word_embeddings", False))}


def rope_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of a Q or K projection from halves-rotation order to pairs-rotation order (per head)."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _state(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{folder}: no *.safetensors weights to convert to GGUF")
    state: dict[str, np.ndarray] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _tensors(state: dict[str, np.ndarray], cfg: dict[str, Any]) -> list[tuple[str, np.ndarray, bool]]:
    """(GGUF name, fp32 array, quantize?) in llama.cpp's order."""
    prefix = "model."

    def get(name: str) -> np.ndarray:
        if name not in state:
            raise ModelError(f"the checkpoint has no tensor '{name}' (a LlamaForCausalLM tensor the GGUF needs)")
        return np.ascontiguousarray(state[name], dtype=np.float32)

    out = [("token_embd.weight", get(prefix + "embed_tokens.weight"), True)]
    for i in range(cfg["layers"]):
        layer = f"{prefix}layers.{i}."
        out += [
            (f"blk.{i}.attn_norm.weight", get(layer + "input_layernorm.weight"), False),
            (f"blk.{i}.attn_q.weight", rope_permute(get(layer + "self_attn.q_proj.weight"), cfg["heads"]), True),
            (f"blk.{i}.attn_k.weight", rope_permute(get(layer + "self_attn.k_proj.weight"), cfg["kv_heads"]), True),
            (f"blk.{i}.attn_v.weight", get(layer + "self_attn.v_proj.weight"), True),
            (f"blk.{i}.attn_output.weight", get(layer + "self_attn.o_proj.weight"), True),
            (f"blk.{i}.ffn_norm.weight", get(layer + "post_attention_layernorm.weight"), False),
            (f"blk.{i}.ffn_gate.weight", get(layer + "mlp.gate_proj.weight"), True),
            (f"blk.{i}.ffn_up.weight", get(layer + "mlp.up_proj.weight"), True),
            (f"blk.{i}.ffn_down.weight", get(layer + "mlp.down_proj.weight"), True),
        ]
    out.append(("output_norm.weight", get(prefix + "norm.weight"), False))
    if not cfg["tied"]:
        out.append(("output.weight", get("lm_head.weight"), True))
    return out


def write_gguf(folder: Path, out: Path, qtype: str) -> dict[str, Any]:
    """Write ``folder``'s Llama checkpoint to ``out`` with matmul weights in ``qtype``; returns what was written."""
    if qtype not in QTYPES:
        raise InputError(f"GGUF quantization {qtype!r} is not one of {', '.join(QTYPES)}")
    gguf = _gguf()
    cfg = llama_config(folder)
    quant = getattr(gguf.GGMLQuantizationType, qtype)
    writer = gguf.GGUFWriter(str(out), "llama")
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
    for name, array, quantize in _tensors(_state(folder), cfg):
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
            "layers": cfg["layers"], "tied_output": cfg["tied"]}
