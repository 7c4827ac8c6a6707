"""Quality evaluation of causal LMs, for an artifact or an eager model, through the cache contract.

Perplexity is token-weighted over a text, with sliding windows (window ``W``, stride ``S``): each
window is one prefill call, and only the tokens not scored by an earlier window count, so every
token after the first is predicted exactly once with up to ``W - 1`` tokens of context (the
standard strided evaluation, as in Hugging Face's perplexity guide). Comparisons against a
reference model run the same windows through both and report logit error, top-1 agreement and
KL divergence ``KL(reference || subject)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from slmc.errors import InputError
from slmc.models.causal_lm import KVCacheSpec, StepFunction, prompt_logits


def windows(num_tokens: int, window: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """``(begin, end, first_scored)`` of each window over ``num_tokens`` tokens.

    Logits at window positions ``first_scored .. end - begin - 2`` predict the tokens that no
    earlier window scored; token 0 has no context and is never scored.
    """
    if window < 2 or not 1 <= stride <= window:
        raise InputError(f"evaluation needs window >= 2 and 1 <= stride <= window (got window {window}, stride {stride})")
    scored_until = 1
    for begin in range(0, max(num_tokens - 1, 0), stride):
        end = min(begin + window, num_tokens)
        yield begin, end, max(scored_until, begin + 1) - 1 - begin
        scored_until = end
        if end == num_tokens:
            return


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _scored_positions(ids: np.ndarray, window: int, stride: int) -> Iterator[tuple[np.ndarray, slice, np.ndarray]]:
    for begin, end, first in windows(len(ids), window, stride):
        chunk = ids[begin:end]
        yield chunk, slice(first, len(chunk) - 1), chunk[first + 1 :]


def perplexity(step: StepFunction, cache: KVCacheSpec, ids: np.ndarray, window: int, stride: int) -> dict[str, Any]:
    """Token-weighted perplexity of ``ids`` under the model behind ``step``."""
    window = min(window, cache.max_context)
    stride = min(stride, window)
    nll, count = 0.0, 0
    for chunk, positions, targets in _scored_positions(ids, window, stride):
        logp = _log_softmax(prompt_logits(step, cache, chunk)[positions])
        nll -= float(logp[np.arange(len(targets)), targets].sum())
        count += len(targets)
    if count == 0:
        raise InputError("the evaluation text has fewer than 2 tokens")
    return {"perplexity": math.exp(nll / count), "nll_per_token": nll / count, "tokens_scored": count,
            "window": window, "stride": stride}


def compare(subject: StepFunction, reference: StepFunction, cache: KVCacheSpec, ids: np.ndarray,
            window: int, stride: int) -> dict[str, Any]:
    """Logit error, top-1 agreement and ``KL(reference || subject)`` per scored token."""
    window = min(window, cache.max_context)
    stride = min(stride, window)
    max_err, sum_err, elements, agree, rows, kl = 0.0, 0.0, 0, 0, 0, 0.0
    for chunk, positions, _ in _scored_positions(ids, window, stride):
        a = prompt_logits(subject, cache, chunk)[positions].astype(np.float64)
        b = prompt_logits(reference, cache, chunk)[positions].astype(np.float64)
        diff = np.abs(a - b)
        max_err = max(max_err, float(diff.max()))
        sum_err += float(diff.sum())
        elements += diff.size
        agree += int(np.sum(a.argmax(-1) == b.argmax(-1)))
        rows += a.shape[0]
        lb, la = _log_softmax(b), _log_softmax(a)
        kl += float(np.sum(np.exp(lb) * (lb - la)))
    return {"max_logit_error": max_err, "mean_logit_error": sum_err / max(elements, 1),
            "top1_agreement": agree / max(rows, 1), "kl_divergence": kl / max(rows, 1), "tokens_compared": rows}


def read_text_tokens(path: Path, tokenizer: Any, max_tokens: int | None) -> np.ndarray:
    """Token ids of a UTF-8 text file, cut to ``max_tokens``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(f"evaluation text {path} not found") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"evaluation text {path} is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    return ids[:max_tokens] if max_tokens else ids
