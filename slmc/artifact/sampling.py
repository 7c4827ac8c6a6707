"""Choosing the next token from logits, in numpy: greedy, or temperature + nucleus (top-p) sampling."""

from __future__ import annotations

import numpy as np

from slmc.errors import InputError


def check_sampling(temperature: float, top_p: float, max_new_tokens: int) -> None:
    """``InputError`` naming the argument out of range."""
    if not temperature >= 0.0:
        raise InputError(f"temperature must be >= 0 (0: greedy), got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise InputError(f"top_p must lie in (0, 1], got {top_p}")
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")


def next_token(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """The argmax when ``temperature`` is 0; else a draw from softmax(logits / temperature) restricted
    to the smallest set of most likely tokens whose probability reaches ``top_p``.

    Precondition: ``logits`` is 1-D and finite; arguments checked by ``check_sampling``.
    """
    if temperature == 0.0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    keep = min(int(np.searchsorted(np.cumsum(probs[order]), top_p)) + 1, probs.size)  # the token crossing top_p is kept
    chosen = order[:keep]
    weights = probs[chosen] / probs[chosen].sum()
    return int(chosen[rng.choice(keep, p=weights)])
