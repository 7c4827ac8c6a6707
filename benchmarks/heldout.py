"""Held-out perplexity as docs/quality.md measures it, shared by the quality benchmarks
(``rotation_quality.py``, ``llama_cpp_quality.py``): one evaluator, ``slmc.verify.evaluation.perplexity``, over
windows of ``WINDOW`` tokens every ``STRIDE`` on the first ``--max-tokens`` tokens of ``--text``.

Not a test: each evaluation runs the model over every window (minutes on fixture-lm).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

WINDOW, STRIDE = 256, 128  # docs/quality.md's setting


def add_heldout_arguments(parser: argparse.ArgumentParser, recipes: str) -> None:
    """The arguments every quality benchmark takes: RECIPE files (``recipes``: their ``nargs``), ``--model``,
    ``--text`` and ``--max-tokens``."""
    parser.add_argument("recipes", nargs=recipes, type=Path)
    parser.add_argument("--model", default="fixture-lm")
    parser.add_argument("--text", default="stdlib-heldout")
    parser.add_argument("--max-tokens", type=int, default=20_000)


def heldout_documents(subject: Any, text: str, max_tokens: int) -> list[np.ndarray]:
    """The token ids ``subject``'s tokenizer gives the first ``max_tokens`` tokens of ``text``, per document."""
    from slmc.data.texts import load_texts
    from slmc.verify.evaluation import document_tokens

    return document_tokens(load_texts(text), subject.tokenizer, max_tokens)


def heldout_perplexity(model: str, recipe: Path | None, text: str, max_tokens: int) -> float:
    """``model`` with ``recipe``'s passes (``None``: as loaded), evaluated eagerly as ``slmc eval MODEL -r RECIPE``."""
    from slmc.driver.eval_subject import open_subject
    from slmc.verify.evaluation import perplexity

    subject = open_subject(model, str(recipe) if recipe is not None else None)
    return perplexity(subject.step, subject.kv_cache, heldout_documents(subject, text, max_tokens), WINDOW,
                      STRIDE)["perplexity"]
