"""vocab_trim on the fixture LM with the corpus of one stdlib package (email): shapes, tied heads,
the rewritten tokenizer (HF ``tokenizers`` and the native tokenizer), logits against the
original's restricted to the kept tokens, and typed errors."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import pytest
import torch

from slmc.errors import InputError, RecipeError
from slmc.frontend.vocabulary_source import trimmed_tokenizer, vocabulary_source
from slmc.graph.ir import fetch_attr, set_attr
from slmc.graph.pass_manager import run_passes
from slmc.spec.pass_registry import PassContext
from slmc.spec.recipe import recipe_from_document
from slmc.spec.vocabulary import VOCABULARY_META
from slmc.spec.yaml_source import parse_yaml

EMBED, HEAD = "model.model.embed_tokens.weight", "model.lm_head.weight"
# Logits of the trimmed model on kept tokens against the original's restricted to them: the rows are
# gathered, not recomputed, so the measured difference is exactly 0.0.
LOGIT_TOLERANCE = 0.0
IN_DOMAIN = ["from email.header import Header\n", "    def __init__(self, policy=None):\n        self.policy = policy\n"]


def recipe(yaml: str, base_dir: Path = Path.cwd()):
    return recipe_from_document(parse_yaml(yaml, "<test recipe>"), base_dir)


def trim(spec, graph, host_target, settings="{text: stdlib-train/email}"):
    r = recipe(f"passes:\n  - vocab_trim: {settings}\n")
    return run_passes(graph, r.steps, PassContext(host_target, (), graph, vocabulary_source(spec, r)))


@pytest.fixture(scope="module")
def trimmed(fixture_lm_spec, fixture_lm_graph, host_target):
    return trim(fixture_lm_spec, fixture_lm_graph, host_target)


def test_structure_rows_gathered_and_stats(trimmed, fixture_lm_graph):
    graph, (report,) = trimmed
    vocabulary = graph.meta[VOCABULARY_META]
    tensors = graph.tensors()
    assert tensors[EMBED].shape == tensors[HEAD].shape == (vocabulary.new_size, 256)
    stats = report["stats"]
    assert stats["tokens_kept"] == vocabulary.new_size < stats["tokens_before"] == 4096
    assert stats["embedding_head_bytes_saved"] == fixture_lm_graph.weight_bytes() - graph.weight_bytes()
    assert stats["embedding_head_bytes_saved"] == 2 * (4096 - vocabulary.new_size) * 256 * 4
    assert set(range(258)) <= set(vocabulary.kept)  # specials (0, 1) and the 256 byte-level symbols
    assert tuple(graph.example_inputs[0].shape) == tuple(fixture_lm_graph.example_inputs[0].shape)


def test_keep_is_the_vocabulary_size(fixture_lm_spec, fixture_lm_graph, host_target):
    graph, (report,) = trim(fixture_lm_spec, fixture_lm_graph, host_target, "{text: stdlib-train/email, keep: 2048}")
    assert report["stats"]["tokens_kept"] == 2048
    assert graph.tensors()[EMBED].shape[0] == 2048  # embedding + head bytes halved


def test_tied_head_stays_tied(fixture_lm_spec, fixture_lm_graph, host_target):
    tied = fixture_lm_graph.clone()  # own attribute modules (tensors shared): the session's graph stays untied
    set_attr(tied.module, HEAD, fetch_attr(tied.module, EMBED))
    graph, (report,) = trim(fixture_lm_spec, tied, host_target)
    assert report["stats"]["tied_head"] is True
    assert fetch_attr(graph.module, HEAD).data_ptr() == fetch_attr(graph.module, EMBED).data_ptr()  # one tensor
    assert report["stats"]["embedding_head_bytes_saved"] == (4096 - report["stats"]["tokens_kept"]) * 256 * 4


def test_numerics_logits_equal_the_originals_restricted(trimmed, fixture_lm_spec, fixture_lm_graph):
    graph, _ = trimmed
    vocabulary = graph.meta[VOCABULARY_META]
    tokenizer = trimmed_tokenizer(fixture_lm_spec.tokenizer, vocabulary)
    empty = [torch.from_numpy(a) for a in fixture_lm_spec.kv_cache.empty()]
    for text in IN_DOMAIN:
        ids = torch.tensor([tokenizer.encode(text)])
        new = graph.run(ids, *empty)[0]
        old = fixture_lm_graph.run(vocabulary.to_old(ids), *empty)[0][..., list(vocabulary.kept)]
        assert torch.max(torch.abs(new - old)).item() <= LOGIT_TOLERANCE


def test_tokenizer_json_loads_and_tokenizes_covered_text_identically(trimmed, fixture_lm_spec):
    from tokenizers import Tokenizer

    graph, _ = trimmed
    vocabulary = graph.meta[VOCABULARY_META]
    tokenizer = trimmed_tokenizer(fixture_lm_spec.tokenizer, vocabulary)
    reloaded = Tokenizer.from_str(tokenizer.text)
    assert reloaded.get_vocab_size(with_added_tokens=True) == vocabulary.new_size
    for text in IN_DOMAIN:
        original = fixture_lm_spec.tokenizer.encode(text)
        assert all(i in set(vocabulary.kept) for i in original)  # covered text
        assert reloaded.encode(text).ids == [vocabulary.old_to_new()[i] for i in original]
        assert tokenizer.decode(tokenizer.encode(text)) == text
    uncovered = "Verschlüsselungsalgorithmus 日本語 🙂"
    assert tokenizer.decode(tokenizer.encode(uncovered)) == uncovered  # any text still tokenizes
    assert tokenizer.token_id("<|endoftext|>") == 0


def test_native_tokenizer_reads_the_trimmed_tokenizer(trimmed, fixture_lm_spec, tmp_path):
    from slmc.native.build import build_library

    graph, _ = trimmed
    tokenizer = trimmed_tokenizer(fixture_lm_spec.tokenizer, graph.meta[VOCABULARY_META])
    path = tmp_path / "tokenizer.json"
    path.write_text(tokenizer.text, encoding="utf-8")
    lib = ctypes.CDLL(str(build_library()))
    lib.slmc_tokenizer_open.restype = ctypes.c_void_p
    lib.slmc_tokenizer_open.argtypes = [ctypes.c_char_p]
    lib.slmc_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int32),
                                  ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
    lib.slmc_tokenizer_close.argtypes = [ctypes.c_void_p]
    lib.slmc_last_error.restype = ctypes.c_char_p
    handle = lib.slmc_tokenizer_open(str(path).encode())
    assert handle, lib.slmc_last_error()
    try:
        for text in IN_DOMAIN + ["Verschlüsselungsalgorithmus 日本語 🙂"]:
            data = text.encode("utf-8")
            out = (ctypes.c_int32 * (4 * len(data) + 8))()
            count = ctypes.c_size_t()
            assert lib.slmc_tokenize(handle, data, len(data), out, len(out), ctypes.byref(count)) == 0, lib.slmc_last_error()
            assert list(out[: count.value]) == tokenizer.encode(text)
    finally:
        lib.slmc_tokenizer_close(handle)


def test_calibration_is_translated_for_later_passes(fixture_lm_spec, fixture_lm_graph, host_target, fixture_calibration):
    r = recipe("passes:\n  - vocab_trim: {text: stdlib-train/email}\n  - dead_code_elimination: {}\n")
    seen = {}
    from slmc.spec.pass_registry import PassOutcome, register_pass, unregister_pass, PassConfig

    @register_pass("_record_context", config=PassConfig)
    def record(graph, config, context):
        seen["calibration"], seen["original"] = context.calibration, context.original
        return PassOutcome(graph)

    try:
        steps = [r.steps[0], type(r.steps[0])("_record_context", PassConfig())]
        graph, _ = run_passes(fixture_lm_graph, steps, PassContext(host_target, fixture_calibration[:2], fixture_lm_graph,
                                                                  vocabulary_source(fixture_lm_spec, r)))
    finally:
        unregister_pass("_record_context")
    size = graph.meta[VOCABULARY_META].new_size
    assert all(int(s[0].max()) < size and s[0].shape == c[0].shape for s, c in zip(seen["calibration"], fixture_calibration))
    assert seen["original"].tensors()[HEAD].shape[0] == size


def test_negative_corpus_file_missing(tmp_path):
    with pytest.raises(RecipeError) as info:
        recipe("passes:\n  - vocab_trim: {text: no-such-corpus.txt}\n", tmp_path)
    assert "passes.0.vocab_trim.text" in str(info.value) and "no-such-corpus.txt" in str(info.value)


def test_negative_no_text_and_no_calibration():
    with pytest.raises(RecipeError) as info:
        recipe("passes:\n  - vocab_trim: {}\n")
    assert "passes.0.vocab_trim" in str(info.value) and "calibration" in str(info.value)


def test_negative_keep_smaller_than_needed(fixture_lm_spec, fixture_lm_graph, host_target):
    with pytest.raises(InputError) as info:
        trim(fixture_lm_spec, fixture_lm_graph, host_target, "{text: stdlib-train/email, keep: 100}")
    assert "vocab_trim.keep" in str(info.value) and "258" in str(info.value)


def test_negative_model_without_tokenizer(fixture_lm_graph, host_target):
    r = recipe("passes:\n  - vocab_trim: {text: stdlib-train/email}\n")
    with pytest.raises(InputError) as info:
        run_passes(fixture_lm_graph, r.steps, PassContext(host_target, (), fixture_lm_graph, None))
    assert "vocab_trim" in str(info.value) and "tokenizer" in str(info.value)


def test_negative_after_quantize_is_an_order_error():
    with pytest.raises(RecipeError) as info:
        recipe("passes:\n  - quantize: {}\n  - vocab_trim: {text: stdlib-train/email}\n")
    assert "pass order" in str(info.value)


def test_report_is_json(trimmed):
    json.dumps(trimmed[1][0]["stats"])
