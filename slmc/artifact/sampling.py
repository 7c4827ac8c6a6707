"""Choosing the next token from logits, in numpy: greedy, or temperature + nucleus (top-p) sampling."""

from __future__ import annotations

import numpy as np

from slmc.errors import InputError, ModelError


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

    The rule for rows softmax cannot take (the native sampler's too, slmc/native/runtime/sampler.cpp): when
    the largest scaled logit is infinite (a +inf logit, or every logit -inf) ``exp(scaled - max)`` would be
    ``inf - inf``; the token is then greedy's, the first maximum (``np.argmax``: the first +inf, or id 0 when
    every logit is -inf), for every temperature and top_p. A NaN logit under sampling is a ``ModelError``
    naming the token (greedy keeps numpy's rule: the first NaN wins).

    Precondition: ``logits`` is 1-D and non-empty; arguments checked by ``check_sampling``.
    """
    if temperature == 0.0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    peak = scaled.max()  # NaN when any logit is NaN
    if np.isnan(peak):
        token = int(np.flatnonzero(np.isnan(scaled))[0])
        raise ModelError(f"sampling: the model's logit of token {token} is NaN (greedy decoding chooses the "
                         "first NaN; sampling has no such rule)")
    if np.isinf(peak):
        return int(np.argmax(scaled))
    probs = np.exp(scaled - peak)
    probs /= probs.sum()
    chosen = nucleus(probs, top_p)
    weights = probs[chosen] / probs[chosen].sum()
    return int(chosen[rng.choice(chosen.size, p=weights)])


FIRST_PREFIX = 512  # ids ranked in the first round of ``nucleus``; each further round ranks 8 times as many


def nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
    """The smallest prefix of ``np.argsort(-probs, kind="stable")`` (most likely first, ties by id) whose
    ``np.cumsum`` reaches ``top_p`` (``np.searchsorted``, left side: the id crossing top_p is kept), or all of it.

    Exactly the prefix a full sort gives (session 12: that sort was 3.4 ms of a 4.2 ms SmolLM token), ranking
    only a growing prefix: the first m ids of the stable order are the ids above the m-th largest value plus
    the lowest ids equal to it (``top_ids``); ``np.cumsum`` adds in sequence, so the prefix's cumulative sums
    are bit-identical to the full one's first m, and a left ``searchsorted`` on a non-decreasing array finds
    the same first crossing when it lies within the prefix. Otherwise the prefix grows (where it starts and how
    fast it grows change only the time, never the result).

    Precondition: ``probs`` is 1-D, finite, >= 0.
    """
    size = probs.size
    m = size if top_p >= 1.0 else min(FIRST_PREFIX, size)  # 1: a crossing, if any, is near the end
    while True:
        prefix = top_ids(probs, m)
        cumulative = np.cumsum(probs[prefix])
        crossing = int(np.searchsorted(cumulative, top_p))
        if crossing < m or m == size:
            return prefix[: min(crossing + 1, size)]
        # no later id is above the m-th value: at least (top_p - reached) / that value more ids are needed;
        # compared as a product first, since that value may be 0 (a cumulative sum that rounds below a top_p
        # near 1 and a tail of underflowed probabilities: the quotient divided by zero) or subnormal (overflow)
        needed, boundary = top_p - cumulative[-1], probs[prefix[-1]]
        m = size if needed >= size * boundary else min(size, max(8 * m, m + int(needed / boundary)))


def top_ids(probs: np.ndarray, m: int) -> np.ndarray:
    """``np.argsort(-probs, kind="stable")[:m]`` without ordering the rest (an O(n) partition, then m ids).

    Precondition: 1 <= m <= probs.size; ``probs`` has no NaN.
    """
    if m == probs.size:
        return np.argsort(-probs, kind="stable")
    threshold = -np.partition(-probs, m - 1)[m - 1]  # the m-th largest value
    above = np.flatnonzero(probs > threshold)  # fewer than m
    tied = np.flatnonzero(probs == threshold)[: m - above.size]  # the lowest ids of the tie: order by id
    ids = np.sort(np.concatenate([above, tied]))
    return ids[np.argsort(-probs[ids], kind="stable")]
