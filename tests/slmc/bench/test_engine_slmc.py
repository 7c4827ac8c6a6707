"""The slmc bench engine's timer of a resident artifact (slmc.bench.engine_slmc.ResidentTimer): it runs the
decoder as generation does and leaves the cache at the context it timed. No timing assertions."""

from __future__ import annotations

from slmc.bench.engine_slmc import ResidentTimer, open_timer
from slmc.bench.thread_policy import engine_default


def test_a_resident_artifact_is_timed_on_its_own_cache_at_the_asked_context(cached_compile):
    timer = open_timer({"artifact": str(cached_compile.artifact), "kv": {}}, engine_default())
    assert isinstance(timer, ResidentTimer)
    samples = timer.decode_ms(40, 3)
    assert len(samples) == 3 and min(samples) > 0
    assert timer.decoder.tokens == 41  # the 40-token context and the last timed step
    assert [s > 0 for s in timer.prefill_s(20, 2)] == [True, True]
    assert timer.decoder.tokens == 20 and timer.peak_rss_mb() > 0


def test_rss_growth_generates_token_after_token_and_counts_the_kv_bytes_written_in_between(cached_compile):
    timer = open_timer({"artifact": str(cached_compile.artifact), "kv": {}}, engine_default())
    grown = timer.rss_growth(4, 40)
    assert timer.decoder.tokens == 40  # one token per step from a one-token prompt
    assert (grown["first"], grown["last"]) == (4, 40) and grown["rss_first_bytes"] > 0 and grown["rss_last_bytes"] > 0
    assert grown["kv_written_bytes"] == 36 * timer.decoder.cache.bytes_per_token()
