"""The logit cosine a trial reports for --min-cosine, on the fixture LM's own outputs."""

from __future__ import annotations

import numpy as np
import pytest

from slmc.frontend.model_source import load_model
from slmc.search.trial import logit_cosine
from slmc.driver.eval_subject import eager_runner

pytestmark = pytest.mark.slow  # 0.3 s to 21 s measured, depending on the load of the 2 shared cores


@pytest.fixture(scope="module")
def fixture_lm():
    spec = load_model("fixture-lm")
    spec.module.eval()
    run = eager_runner(spec.module)
    return spec, lambda i, k, v: tuple(run(i, k, v))


def test_identical_models_have_cosine_one_and_a_perturbed_one_less(fixture_lm):
    spec, step = fixture_lm
    docs = [np.asarray(spec.tokenizer.encode("def main():\n    return sorted(items, key=len)\n" * 3), dtype=np.int64)]
    assert logit_cosine(step, step, spec.kv_cache, docs, 32, 16) == pytest.approx(1.0)

    def noisy(i, k, v):
        logits, keys, values = step(i, k, v)
        return logits + np.random.default_rng(0).normal(0, 1.0, logits.shape).astype(logits.dtype), keys, values

    assert logit_cosine(noisy, step, spec.kv_cache, docs, 32, 16) < 0.999
