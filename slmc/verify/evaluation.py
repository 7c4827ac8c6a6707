"""Quality evaluation of causal LMs, for an artifact or an eager model, through the cache contract.

Perplexity is token-weighted over a text, with sliding windows (window ``W``, stride ``S``): each
window is one prefill call, and only the tokens not scored by an earlier window count, so every
token after the first is predicted exactly once with up to ``W - 1`` tokens of context (the
standard strided evaluation, as in Hugging Face's perplexity guide). Comparisons against a
reference model run the same windows through both and report logit error, top-1 agreement and
KL divergence ``KL(reference || subject)``. Both show the tokens done out of the total as progress
(``slmc.progress``: a bar on a terminal, plain lines elsewhere).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from slmc import progress
from slmc.errors import InputError
from slmc.graph.kv_cache import Decoder, KVCacheSpec, StepFunction, prompt_logits


def windows(num_tokens: int, window: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """``(begin, end, first_scored)`` of each window over ``num_tokens`` tokens.

    Logits at window positions ``first_scored .. end - begin - 2`` predict the tokens that no
    earlier window scored; token 0 has no context and is never scored.
    """
    if window < 2 or not 1 <= stride < window:
        raise InputError(f"evaluation needs window >= 2 and 1 <= stride < window (got window {window}, stride {stride})")
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


def _scored_positions(documents: Sequence[np.ndarray], window: int, stride: int,
                      label: str) -> Iterator[tuple[np.ndarray, slice, np.ndarray]]:
    """Each window's tokens, the positions whose logits are scored and their target tokens; the
    progress of the scored tokens (every token but each document's first) is shown as ``label``."""
    total = sum(max(len(ids) - 1, 0) for ids in documents)
    with progress.bar(label, total=total, unit="token") as bar:
        for ids in documents:
            for begin, end, first in windows(len(ids), window, stride):
                chunk = ids[begin:end]
                yield chunk, slice(first, len(chunk) - 1), chunk[first + 1 :]
                bar.update(len(chunk) - 1 - first)


def _bounded(cache: KVCacheSpec, window: int, stride: int) -> tuple[int, int]:
    """Windows no longer than the model's context; the stride shrinks with the window if needed."""
    bounded = min(window, cache.max_context)
    return bounded, stride if bounded == window else min(stride, bounded - 1)


def perplexity(step: StepFunction | Decoder, cache: KVCacheSpec, documents: Sequence[np.ndarray], window: int, stride: int) -> dict[str, Any]:
    """Token-weighted perplexity over ``documents`` (token id arrays, each evaluated on its own)."""
    window, stride = _bounded(cache, window, stride)
    nll, count = 0.0, 0
    for chunk, positions, targets in _scored_positions(documents, window, stride, "perplexity"):
        logp = _log_softmax(prompt_logits(step, cache, chunk)[positions])
        nll -= float(logp[np.arange(len(targets)), targets].sum())
        count += len(targets)
    if count == 0:
        raise InputError("the evaluation text has fewer than 2 tokens")
    return {"perplexity": math.exp(nll / count), "nll_per_token": nll / count, "tokens_scored": count,
            "documents": len(documents), "window": window, "stride": stride}


def compare(subject: StepFunction | Decoder, reference: StepFunction | Decoder, cache: KVCacheSpec, documents: Sequence[np.ndarray],
            window: int, stride: int, reference_cache: KVCacheSpec | None = None) -> dict[str, Any]:
    """Logit error, top-1 agreement and ``KL(reference || subject)`` per scored token (``reference_cache``:
    the reference's KV cache when it differs from the subject's, e.g. after head pruning)."""
    window, stride = _bounded(cache, window, stride)
    max_err, sum_err, elements, agree, rows, kl = 0.0, 0.0, 0, 0, 0, 0.0
    for chunk, positions, _ in _scored_positions(documents, window, stride, "compare"):
        a = prompt_logits(subject, cache, chunk)[positions].astype(np.float64)
        b = prompt_logits(reference, reference_cache or cache, chunk)[positions].astype(np.float64)
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


def document_tokens(texts: Sequence[str], tokenizer: Any, max_tokens: int | None) -> list[np.ndarray]:
    """Token ids of each document (with the tokenizer's document prefix), up to ``max_tokens`` in all."""
    documents, total = [], 0
    encode = getattr(tokenizer, "encode_document", tokenizer.encode)
    for text in texts:
        ids = np.asarray(encode(text), dtype=np.int64)
        if max_tokens is not None:
            ids = ids[: max(max_tokens - total, 0)]
        if len(ids) >= 2:
            documents.append(ids)
            total += len(ids)
        if max_tokens is not None and total >= max_tokens:
            break
    return documents


def embedding_agreement(subject: Any, reference: Any, tokenizer: Any, lines: Sequence[str]) -> dict[str, Any]:
    """Cosine similarity of sentence embeddings, subject against reference, one sentence at a time.

    ``subject`` and ``reference`` map ``(input_ids [1, S], attention_mask [1, S])`` (int64) to
    outputs whose first is the embedding ``[1, D]``; ``tokenizer.encode_document`` (special
    tokens included) when the tokenizer has it, else ``encode``.
    """
    encode = getattr(tokenizer, "encode_document", tokenizer.encode)
    cosines = []
    for line in lines:
        ids = np.asarray([encode(line)], dtype=np.int64)
        mask = np.ones_like(ids)
        a = np.asarray(subject(ids, mask)[0], dtype=np.float64).reshape(-1)
        b = np.asarray(reference(ids, mask)[0], dtype=np.float64).reshape(-1)
        cosines.append(float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30)))
    return {"mean_cosine": float(np.mean(cosines)), "min_cosine": float(np.min(cosines)), "sentences": len(cosines)}
