"""The bytes one decode step reads (slmc.bench.decode_bytes), per engine kind, on tiny models: an embedding
gathered as one row, a table tied to the head read once in full, every other stored tensor at its stored size."""

from __future__ import annotations

import numpy as np
import pytest

from slmc.bench.decode_bytes import (
    gguf_decode_bytes,
    kv_bytes_per_token,
    onnx_decode_bytes,
    slmc_decode_bytes,
    torch_decode_bytes,
)
from slmc.models import FIXTURE_DIR

HIDDEN, VOCAB = 64, 256


def _llama(tied: bool):
    import transformers

    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      tie_word_embeddings=tied, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return transformers.LlamaForCausalLM(config).eval()


def _all_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())  # a tied parameter is listed once


def test_torch_untied_embedding_is_one_row_tied_table_is_the_heads_full_read():
    untied, tied = _llama(False), _llama(True)
    table = VOCAB * HIDDEN * 4
    read = torch_decode_bytes(untied)
    assert read.gathered == {"model.embed_tokens.weight": (table, HIDDEN * 4)}
    assert read.weight_bytes == _all_bytes(untied) - table + HIDDEN * 4 and read.stored_bytes == _all_bytes(untied)
    read = torch_decode_bytes(tied)
    assert read.gathered == {} and read.weight_bytes == _all_bytes(tied)


def test_slmc_artifact_gathers_the_untied_embedding_and_reads_every_other_stored_tensor(cached_compile):
    from slmc.artifact.aligned_safetensors import map_tensors
    from slmc.artifact.layout import WEIGHTS, read_manifest
    from slmc.frontend.model_source import load_model

    manifest = read_manifest(cached_compile.artifact)
    weights = manifest.weights
    module = load_model("tiny-lm").module
    read = slmc_decode_bytes(cached_compile.artifact / WEIGHTS, weights.order, weights.aliases, module)
    table = module.embed.weight
    assert read.gathered == {"p_embed_weight": (table.numel() * 4, table.shape[1] * 4)}
    assert read.stored_bytes == weights.bytes  # each stored tensor once, aliases not again
    stored = map_tensors(cached_compile.artifact / WEIGHTS, sorted({weights.aliases.get(n, n) for n in weights.order}))
    assert read.full == {n: a.nbytes for n, a in stored.items() if n != "p_embed_weight"}


@pytest.mark.parametrize("table", ["lm_head", "model.embed_tokens"])
def test_slmc_embedding_own_copy_beside_a_tied_head_is_one_row(tmp_path, table):
    """A tied table whose head keeps the table's name (a w8a8 head: no gather reads its codes) while the embedding
    is quantized into its own copy ``<table>.embedding.*`` (passes/quantize.py): the head's tensors are read whole,
    the copy one row per step (issue 22.3: it was counted whole, 94.5 vs 78.6 MB for SmolLM's W4A8 rows). The
    graph names the shared table after either module, so both spellings are counted alike."""
    from slmc.artifact.aligned_safetensors import save_aligned
    from slmc.bench.decode_bytes import exported_prefix
    from slmc.quantization.stored_names import own_copy_name

    head, copy = exported_prefix(table), exported_prefix(own_copy_name(table))
    tensors = {head + "qweight": np.zeros((VOCAB, HIDDEN), np.int8), head + "weight_scales": np.ones(VOCAB, np.float32),
               copy + "qweight": np.zeros((VOCAB, HIDDEN // 2), np.uint8), copy + "scales": np.ones((VOCAB, 2), np.float16),
               "p_model_norm_weight": np.ones(HIDDEN, np.float32)}
    save_aligned(tensors, tmp_path / "weights.safetensors")
    read = slmc_decode_bytes(tmp_path / "weights.safetensors", list(tensors), {}, _llama(True))
    assert read.gathered == {copy + "qweight": (VOCAB * HIDDEN // 2, HIDDEN // 2), copy + "scales": (VOCAB * 4, 4)}
    assert read.full == {n: a.nbytes for n, a in tensors.items() if not n.startswith(copy)}
    assert read.weight_bytes == VOCAB * (HIDDEN + 4) + HIDDEN * 4 + HIDDEN // 2 + 4


def test_gguf_token_embedding_is_one_row_unless_the_head_is_tied_to_it(tmp_path):
    pytest.importorskip("gguf", reason="the gguf package is the bench extra (pip install -e '.[bench]')")
    from gguf import GGUFReader

    from slmc.bench.gguf_export import checkpoint_config, write_gguf

    untied = write_gguf(FIXTURE_DIR, tmp_path / "fixture.gguf", "Q8_0")
    tensors = {t.name: t for t in GGUFReader(untied["gguf"]).tensors}
    embedding = tensors["token_embd.weight"]
    read = gguf_decode_bytes(tmp_path / "fixture.gguf")
    cfg = checkpoint_config(FIXTURE_DIR)
    row = cfg["hidden"] // 32 * 34  # Q8_0: blocks of 32 int8 codes and an f16 scale
    assert int(embedding.n_bytes) == cfg["vocab"] * row
    assert read.gathered == {"token_embd.weight": (int(embedding.n_bytes), row)}
    assert read.weight_bytes == sum(int(t.n_bytes) for t in tensors.values()) - int(embedding.n_bytes) + read.gathered[
        "token_embd.weight"][1]
    folder = tmp_path / "tied"
    _llama(True).save_pretrained(folder)
    write_gguf(folder, tmp_path / "tied.gguf", "Q4_0")
    tensors = GGUFReader(str(tmp_path / "tied.gguf")).tensors
    assert "output.weight" not in {t.name for t in tensors}
    read = gguf_decode_bytes(tmp_path / "tied.gguf")
    assert read.gathered == {} and read.weight_bytes == sum(int(t.n_bytes) for t in tensors)


def _onnx_model(path, tied: bool):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((VOCAB, HIDDEN)).astype(np.float32), "embed")
    norm = numpy_helper.from_array(np.ones(HIDDEN, np.float32), "norm")
    nodes = [helper.make_node("Gather", ["embed", "ids"], ["x"]), helper.make_node("Mul", ["x", "norm"], ["h"])]
    initializers = [table, norm]
    if tied:
        nodes += [helper.make_node("Transpose", ["embed"], ["head"], perm=[1, 0])]
    else:
        initializers.append(numpy_helper.from_array(rng.standard_normal((HIDDEN, VOCAB)).astype(np.float32), "head"))
    nodes.append(helper.make_node("MatMul", ["h", "head"], ["logits"]))
    graph = helper.make_graph(nodes, "lm", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, VOCAB])], initializers)
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_onnx_initializer_only_gathered_is_one_row_a_transposed_tied_head_reads_it_whole(tmp_path):
    table, norm = VOCAB * HIDDEN * 4, HIDDEN * 4
    read = onnx_decode_bytes(_onnx_model(tmp_path / "untied.onnx", tied=False))
    assert read.gathered == {"embed": (table, HIDDEN * 4)} and read.full == {"norm": norm, "head": table}
    read = onnx_decode_bytes(_onnx_model(tmp_path / "tied.onnx", tied=True))
    assert read.gathered == {} and read.full == {"embed": table, "norm": norm}


def test_kv_bytes_per_token_counts_keys_and_values_of_every_layer():
    assert kv_bytes_per_token({"layers": 30, "kv_heads": 3, "head_dim": 64, "max_context": 2048}, 2) == 2 * 30 * 3 * 64 * 2
