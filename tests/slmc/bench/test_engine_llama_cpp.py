"""llama.cpp as a ``Decoder`` (slmc.bench.engine_llama_cpp.LlamaCppDecoder): slmc's evaluator scores it like an slmc model.

The fixture's checkpoint as F32 GGUF with an F32 KV cache is the same function as slmc's eager fp32 model (same
weights, no rounding but float32 summation order): perplexity within 0.01% (measured 0.0013%), pieces fed in turn
within 3e-5 of the logits fed at once (measured 2.9e-6 of logits up to 13.9).
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
    # measured 17.61203 vs 17.61181: 1.3e-5 relative (llama.cpp 0.3.36, F32 GGUF and cache, one thread)
    assert abs(ours["perplexity"] / eager["perplexity"] - 1) < 1e-4


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
    # measured max |difference|: 0.0 for the first 16 positions, 2.9e-6 for the last (logits up to 13.9 in magnitude)
    np.testing.assert_allclose(first[0], whole[0, :16], rtol=0, atol=1e-5)
    np.testing.assert_allclose(last[0, 0], whole[0, -1], rtol=0, atol=3e-5)


def test_an_f32_cache_is_f32_arithmetic_only_with_flash_attention_off(fixture_f32):
    """llama.cpp's flash attention (its CPU default) casts an F32 K/V cache to F16 before attending: with it on, the
    F32 cache's logits are the F16 cache's bit for bit; with ``flash_attn=False`` they are the eager fp32 model's."""
    from slmc.bench.engine_llama_cpp import LlamaCpp
    from slmc.graph.kv_cache import prompt_logits

    path, subject, _ = fixture_f32
    ids = [(i * 7 + 1) % 64 for i in range(100)]
    eager = np.asarray(prompt_logits(subject.step, subject.kv_cache, np.array([ids]))).reshape(len(ids), -1)
    default16, default32 = (LlamaCpp(path, 128, 1, kv_type=t).prompt_logits(ids) for t in ("F16", "F32"))
    off32 = LlamaCpp(path, 128, 1, kv_type="F32", flash_attn=False).prompt_logits(ids)
    np.testing.assert_array_equal(default32, default16)
    # measured max |difference| from eager (logits up to 17.4): F32 cache, flash attention off 1.1e-5; on 7.5e-3
    np.testing.assert_allclose(off32, eager, rtol=0, atol=1e-4)
    assert np.abs(default32 - eager).max() > 1e-3


def test_an_unknown_kv_type_is_refused(fixture_f32):
    from slmc.bench.engine_llama_cpp import LlamaCpp
    from slmc.errors import InputError

    with pytest.raises(InputError, match="KV cache type 'Q4_0' is not one of F16, F32"):
        LlamaCpp(fixture_f32[0], 64, 1, kv_type="Q4_0")


# llama.cpp's sequence state holds, per cached token, its keys and values plus 12 bytes of cell metadata (position,
# sequence-id count, sequence id: llama_kv_cache::state_write_meta); measured 2,060 (F16) and 4,108 (F32) per token
STATE_CELL_META_BYTES = 12


@pytest.mark.parametrize("kv_type", ["F16", "F32"])
def test_the_kv_bytes_per_token_the_bench_counts_are_llama_cpps(fixture_f32, kv_type):
    from slmc.bench.decode_bytes import kv_bytes_per_token
    from slmc.bench.engine_llama_cpp import KV_TYPE_BYTES, LlamaCpp

    path, subject, _ = fixture_f32
    llama = LlamaCpp(path, 64, 1, kv_type=kv_type)
    sizes = []
    for tokens in (8, 9):
        llama.clear()
        llama.decode(list(range(1, tokens + 1)), 0)
        sizes.append(llama.L.llama_state_seq_get_size(llama.ctx, 0))
    counted = kv_bytes_per_token(subject.kv_cache.to_json(), KV_TYPE_BYTES[kv_type])
    assert sizes[1] - sizes[0] == counted + STATE_CELL_META_BYTES


def test_more_tokens_than_llama_cpps_batch_are_fed_in_batches(fixture_f32):
    """llama_decode aborts the process (GGML_ASSERT) on a batch longer than n_batch (min(n_ctx, 2048)): a 2,060-token
    prompt (slmc bench --prefill 4096 on a long-context model) killed the measuring process."""
    from slmc.bench.engine_llama_cpp import LlamaCpp, LlamaCppDecoder

    path, subject, _ = fixture_f32
    llama = LlamaCpp(path, 2100, 1, kv_type="F32")
    assert llama.n_batch == 2048
    ids = (np.arange(2060) * 7 + 1) % 64
    decoder = LlamaCppDecoder(llama, subject.kv_cache)
    whole = decoder.feed(ids[None])
    decoder.reset()
    first = decoder.feed(ids[None, :1000])
    assert whole.shape == (1, 2060, 4096)
    # measured max |difference| 0.0 (logits up to 17.4): the same first call's rows
    np.testing.assert_allclose(first[0], whole[0, :1000], rtol=0, atol=1e-5)
    llama.clear()
    llama.decode([int(i) for i in ids], 0)
    # the last row of the same two calls, computed alone: measured 1.9e-6
    np.testing.assert_allclose(llama.logits(-1), whole[0, -1], rtol=0, atol=2e-5)

def test_cold_samples_evict_between_llama_cpps_steps_in_its_process(fixture_f32):
    """``--evict-llc`` for llama.cpp: the eviction write runs between ``llama_decode`` calls in this process."""
    from slmc.bench.engine_llama_cpp import LlamaTimer
    from slmc.bench.thread_policy import engine_default

    timer = LlamaTimer({"gguf": str(fixture_f32[0]), "kv": {"max_context": 64}}, engine_default())
    assert [s > 0 for s in timer.decode_ms(16, 2, evict_bytes=2**20)] == [True, True]
