"""Quality bars of ``quantize`` on real models (issue 4), guarded with a margin on a token budget.

docs/quality.md has the full held-out numbers and the commands (``slmc eval ... -r RECIPE``) that
reproduce them; these tests run the same recipes on the first 20,000 held-out tokens (fixture LM)
and on the held-out docstring sentences (all-MiniLM-L6-v2).
Measured on that budget (2026-11-21): baseline 18.2499; int8 RTN +0.01%; int4 g32 RTN +1.6%,
GPTQ +1.2%, AWQ +1.25%; w8a8 SmoothQuant +0.35%; w4a8 g32 GPTQ +1.00% (2026-12-07); MiniLM int8 cosine 0.99956, int4 g32 GPTQ 0.9867.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from slmc.data.texts import load_texts, sentences
from slmc.verify.evaluation import document_tokens, embedding_agreement, perplexity
from slmc.driver.eval_subject import open_subject

RECIPES = Path(__file__).resolve().parents[2] / "examples" / "recipes"
TOKENS = 20_000
pytestmark = pytest.mark.slow


def _perplexity(recipe: str | None) -> float:
    subject = open_subject("fixture-lm", str(RECIPES / recipe) if recipe else None)
    docs = document_tokens(load_texts("stdlib-heldout"), subject.tokenizer, TOKENS)
    return perplexity(subject.step, subject.kv_cache, docs, 256, 128)["perplexity"]


@pytest.fixture(scope="module")
def increases() -> dict[str, float]:
    base = _perplexity(None)
    names = ["int8-rtn", "int4-g32-rtn", "int4-g32-gptq", "int4-g32-awq", "w8a8-smoothquant", "w4a8-g32"]
    return {name: _perplexity(f"{name}.yaml") / base - 1.0 for name in names}


def test_int8_weight_only_within_1_percent(increases):
    assert increases["int8-rtn"] <= 0.005  # bar 1%, measured +0.01%


def test_w8a8_smoothquant_within_3_percent(increases):
    assert increases["w8a8-smoothquant"] <= 0.02  # bar 3%, measured +0.35%


def test_w4a8_g32_within_3_percent(increases):
    assert increases["w4a8-g32"] <= 0.025  # bar 3% (issue 21), measured +1.00%


def test_int4_gptq_within_8_percent_and_better_than_rtn(increases):
    assert increases["int4-g32-gptq"] <= 0.06  # bar 8%, measured +1.2%
    assert increases["int4-g32-gptq"] < increases["int4-g32-rtn"]


def test_awq_within_2_points_of_gptq(increases):
    assert abs(increases["int4-g32-awq"] - increases["int4-g32-gptq"]) <= 0.015  # bar 2 points


@pytest.mark.parametrize("recipe,bar", [("int8-rtn.yaml", 0.997), ("int4-g32-gptq.yaml", 0.982)])
def test_minilm_embedding_cosine(recipe, bar):
    from slmc.models.huggingface import minilm_folder

    folder = str(minilm_folder())
    subject = open_subject(folder, str(RECIPES / "minilm" / recipe))
    reference = open_subject(folder)
    lines = sentences(load_texts("stdlib-sentences-heldout"))
    result = embedding_agreement(subject.run, reference.run, reference.require_tokenizer(), lines)
    assert result["mean_cosine"] >= bar  # bars 0.995 / 0.98; measured 0.99956 / 0.9867
