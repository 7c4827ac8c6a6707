import math

import numpy as np
import pytest

from slmc.errors import InputError
from slmc.verify.evaluation import compare, document_tokens, perplexity, windows
from slmc.models import tiny_lm
from slmc.graph.kv_cache import KVCacheSpec, eager_step
from slmc.data.texts import load_texts


def test_windows_score_every_token_once():
    for n, w, s in ((10, 4, 2), (10, 4, 3), (3, 8, 4), (1000, 256, 128), (257, 256, 255)):
        scored = []
        for begin, end, first in windows(n, w, s):
            assert end - begin <= w
            scored.extend(range(begin + first + 1, end))
        assert scored == list(range(1, n)), (n, w, s)
    with pytest.raises(InputError):
        list(windows(10, 4, 4))  # stride == window would leave a token per window unscored


def uniform_step(vocab):
    """A model that predicts the uniform distribution: perplexity must equal the vocab size."""
    def step(ids, keys, values):
        t = ids.shape[1]
        return np.zeros((1, t, vocab), np.float32), keys, values
    return step


def test_perplexity_of_a_uniform_model_is_the_vocab_size():
    cache = KVCacheSpec(1, 1, 1, 64)
    docs = [np.arange(100) % 50, np.arange(30) % 50]
    result = perplexity(uniform_step(50), cache, docs, window=32, stride=16)
    assert math.isclose(result["perplexity"], 50.0, rel_tol=1e-9)
    assert result["tokens_scored"] == 99 + 29 and result["documents"] == 2


def test_compare_a_model_with_itself():
    spec = tiny_lm.build()
    step = eager_step(spec.module)
    docs = document_tokens(["def f(x):\n    return x\n" * 10], spec.tokenizer, 120)
    result = compare(step, step, spec.kv_cache, docs, 64, 32)
    assert result["max_logit_error"] == 0.0 and result["top1_agreement"] == 1.0 and result["kl_divergence"] == 0.0


def test_document_tokens_respects_the_budget():
    from slmc.data.tokenizer import ByteTokenizer

    docs = document_tokens(["abcdef", "ghijkl", "mnop"], ByteTokenizer(), 9)
    assert [len(d) for d in docs] == [6, 3]


def test_text_sources(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    assert load_texts(tmp_path / "a.txt") == ["hello"]
    with pytest.raises(InputError, match="not found"):
        load_texts(tmp_path / "missing.txt")
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="not UTF-8"):
        load_texts(tmp_path / "b.txt")
