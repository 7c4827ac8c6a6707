"""llama.cpp as a ``Decoder`` (slmc.bench.engine_llama_cpp.LlamaCppDecoder): slmc's evaluator scores it like an slmc model.

The fixture's checkpoint as F32 GGUF with an F32 KV cache is the same function as slmc's eager fp32 model (same
weights, no rounding but float32 summation order): perplexity within 0.1% (measured: see the asserts' comments).
"""

from __future__ import annotations

import numpy as np
import pytest

from slmc.models import FIXTURE_DIR

pytest.importorskip("gguf", reason="the 'gguf' package (pip install -e '.[bench]') writes the GGUF")
pytest.importorskip("llama_cpp", reason="llama-cpp-python (pip install -e '.[bench]') runs the GGUF")

TOKENS = 600


@pytest.fixture(scope="module")
def fixture_f32(tmp_path_factory):
    from slmc.bench.gguf_export import write_gguf
    from slmc.data.texts import load_texts
    from slmc.driver.eval_subject import open_subject
    from slmc.verify.evaluation import document_tokens

    path = tmp_path_factory.mktemp("gguf") / "fixture-f32.gguf"
    write_gguf(FIXTURE_DIR, path, "F32")
    subject = open_subject("fixture-lm")
    return path, subject, document_tokens(load_texts("stdlib-heldout"), subject.tokenizer, TOKENS)


def test_perplexity_of_the_unrounded_gguf_is_the_eager_models(fixture_f32):
    from slmc.bench.engine_llama_cpp import LlamaCpp, LlamaCppDecoder
    from slmc.verify.evaluation import perplexity

    path, subject, docs = fixture_f32
    decoder = LlamaCppDecoder(LlamaCpp(path, 128, 1, kv_type="F32"), subject.kv_cache)
    ours = perplexity(decoder, subject.kv_cache, docs, 128, 64)
    eager = perplexity(subject.step, subject.kv_cache, docs, 128, 64)
    assert ours["tokens_scored"] == eager["tokens_scored"] == TOKENS - len(docs)
    assert abs(ours["perplexity"] / eager["perplexity"] - 1) < 1e-3


def test_feeding_in_pieces_continues_the_positions(fixture_f32):
    from slmc.bench.engine_llama_cpp import LlamaCpp, LlamaCppDecoder

    path, subject, docs = fixture_f32
    decoder = LlamaCppDecoder(LlamaCpp(path, 64, 1, kv_type="F32"), subject.kv_cache)
    ids = docs[0][:24].reshape(1, -1)
    decoder.reset()
    whole = decoder.feed(ids)
    decoder.reset()
    first = decoder.feed(ids[:, :16])
    last = decoder.feed(ids[:, 16:], last_only=True)
    assert whole.shape == (1, 24, 4096) and first.shape == (1, 16, 4096) and last.shape == (1, 1, 4096)
    np.testing.assert_allclose(first[0], whole[0, :16], rtol=0, atol=1e-4)
    np.testing.assert_allclose(last[0, 0], whole[0, -1], rtol=0, atol=1e-3)


def test_an_unknown_kv_type_is_refused(fixture_f32):
    from slmc.bench.engine_llama_cpp import LlamaCpp
    from slmc.errors import SlmcError

    with pytest.raises(SlmcError, match="KV cache type 'Q4_0' is not one of F16, F32"):
        LlamaCpp(fixture_f32[0], 64, 1, kv_type="Q4_0")


def test_cold_samples_evict_between_llama_cpps_steps_in_its_process(fixture_f32):
    """``--evict-llc`` for llama.cpp: the eviction write runs between ``llama_decode`` calls in this process."""
    from slmc.bench.engine_llama_cpp import LlamaTimer
    from slmc.bench.thread_policy import engine_default

    timer = LlamaTimer({"gguf": str(fixture_f32[0]), "kv": {"max_context": 64}}, engine_default())
    assert [s > 0 for s in timer.decode_ms(16, 2, evict_bytes=2**20)] == [True, True]
