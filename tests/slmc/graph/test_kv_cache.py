"""The KV-cache contract's stored dtype (slmc.graph.kv_cache): int8 rows with a scale, its size, and the eager decoder
that rounds its cache as the artifact stores it."""

from __future__ import annotations

import numpy as np

from slmc.graph.kv_cache import CopyDecoder, KVCacheSpec, dequantize_rows, quantize_rows, round_stored


def test_int8_rows_round_trip_within_half_a_step_and_keep_the_absmax():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 3, 5, 64)).astype(np.float32) * 3
    x[0, 0, 0, 0] = 0.0  # a row of zeros: scale 0, q 0, no NaN
    q, scale = quantize_rows(x)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == x.shape[:-1]
    assert scale[0, 0, 0, 0] == 0 and not q[0, 0, 0, 0].any()
    assert np.abs(q).max() == 127
    back = dequantize_rows(q, scale)
    assert np.all(np.abs(back - x) <= scale[..., None] / 2 + 1e-6)
    np.testing.assert_array_equal(round_stored(KVCacheSpec(2, 3, 64, 8), x), x)  # float32: unchanged


def test_the_smollm_135m_shape_stores_0_266_of_the_float32_bytes_per_token():
    fp32 = KVCacheSpec(layers=30, kv_heads=3, head_dim=64, max_context=2048)
    int8 = KVCacheSpec(layers=30, kv_heads=3, head_dim=64, max_context=2048, dtype="int8")
    assert fp32.bytes_per_token() == 46_080 and int8.bytes_per_token() == 12_240
    assert int8.bytes_per_token() / fp32.bytes_per_token() <= 0.27  # 68 / 256 = 0.266 (issue 20.2's bar)


def test_a_float16_cache_stores_half_the_bytes_rounded_to_the_nearest_float16():
    fp16 = KVCacheSpec(layers=30, kv_heads=3, head_dim=64, max_context=2048, dtype="float16")
    assert fp16.bytes_per_token() == 23_040 and fp16.narrowed and not fp16.quantized
    x = np.random.default_rng(2).standard_normal((2, 5, 64)).astype(np.float32)
    stored = round_stored(fp16, x)
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, x.astype(np.float16).astype(np.float32))
    assert np.all(np.abs(stored - x) <= np.abs(x) * 2.0 ** -11)  # half an ulp of a 10-bit mantissa


def test_the_copy_decoder_rounds_only_the_new_positions_of_an_int8_cache():
    cache = KVCacheSpec(1, 1, 8, 16, dtype="int8")
    rng = np.random.default_rng(1)

    def step(ids, keys, values):
        new = rng.standard_normal((1, 1, 1, ids.shape[1], 8)).astype(np.float32)
        return np.zeros((1, ids.shape[1], 4), np.float32), np.concatenate([keys, new], 3), np.concatenate([values, new], 3)

    decoder = CopyDecoder(step, cache)
    decoder.feed(np.zeros((1, 3), np.int64))
    first = decoder.keys.copy()
    decoder.feed(np.zeros((1, 1), np.int64))
    np.testing.assert_array_equal(decoder.keys[..., :4, :], first)  # what was stored stays as stored
    q, scale = quantize_rows(decoder.keys[..., 1:, :])
    np.testing.assert_allclose(dequantize_rows(q, scale), decoder.keys[..., 1:, :], rtol=0, atol=1e-6)  # already rounded


def test_teacher_forced_decoding_feeds_the_given_tokens_and_records_its_own_choices():
    from slmc.graph.kv_cache import eager_step, generate_greedy, prompt_logits
    from slmc.models import tiny_lm

    spec = tiny_lm.build()
    step, prompt = eager_step(spec.module), [3, 10, 17, 24]
    own = generate_greedy(step, spec.kv_cache, prompt, 4)
    forced = [(t + 1) % 256 for t in own.tokens]  # never the model's own choice
    taught = generate_greedy(step, spec.kv_cache, prompt, 4, forced=forced)
    assert taught.tokens[0] == own.tokens[0] and len(taught.step_logits) == 4
    for k, logits in enumerate(taught.step_logits):  # step k's logits follow the prompt and forced[:k]
        expected = prompt_logits(step, spec.kv_cache, np.asarray(prompt + forced[:k]))[-1]
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)
        assert taught.tokens[k] == int(np.argmax(logits))
