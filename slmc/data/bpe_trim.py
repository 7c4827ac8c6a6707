"""Trimming a BPE ``tokenizer.json`` to a subset of its tokens, so any text still tokenizes.

Which tokens must stay: every token no merge produces (the base alphabet: the 256 byte-level
symbols of a byte-level BPE, the ``<0xXX>`` byte-fallback tokens and single characters of a
SentencePiece-style BPE), every added/special token and ``unk``, and for every kept merge
result the two parts it is merged from (the merge closure). A merge stays only when its two
parts and its result stay, in its original rank, so BPE (Sennrich et al., 2016, "Neural Machine
Translation of Rare Words with Subword Units") applies exactly the merges it applied before to
every word whose tokens all stay: text covered by the kept merges tokenizes identically, with
remapped ids. A word that needed a removed merge falls back to the kept merges below it.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from slmc.errors import InputError


@dataclass(frozen=True)
class BpeVocabulary:
    """The id structure of a BPE ``tokenizer.json``: tokens by id, merges in rank order, and which
    tokens every trim keeps (base alphabet, added tokens, unk)."""

    tokens: tuple[str, ...]  # by id (model vocabulary and added tokens)
    merges: tuple[tuple[str, str], ...]
    required: frozenset[int]

    @property
    def ids(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    def merge_parts(self) -> dict[int, tuple[int, int]]:
        """Result id -> the ids of its two parts, for the first (highest-priority) merge producing it."""
        ids = self.ids
        parts: dict[int, tuple[int, int]] = {}
        for a, b in self.merges:
            result = ids.get(a + b)
            if result is not None and a in ids and b in ids:
                parts.setdefault(result, (ids[a], ids[b]))
        return parts


def _merge_pairs(merges: Sequence[Any]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for i, merge in enumerate(merges):
        if isinstance(merge, str) and merge.count(" ") >= 1:
            a, b = merge.split(" ", 1)
        elif isinstance(merge, list) and len(merge) == 2 and all(isinstance(p, str) for p in merge):
            a, b = merge
        else:
            raise InputError(f"tokenizer.json: model.merges[{i}] is {merge!r}; expected \"a b\" or [\"a\", \"b\"]")
        pairs.append((a, b))
    return tuple(pairs)


def bpe_vocabulary(data: dict[str, Any]) -> BpeVocabulary:
    """The vocabulary of a parsed ``tokenizer.json``; ``InputError`` unless its model is a BPE with
    ids ``0..n-1`` (vocabulary and added tokens together)."""
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise InputError(f"vocab_trim needs a BPE tokenizer; tokenizer.json model.type is {model.get('type')!r}")
    by_id: dict[int, str] = {int(i): t for t, i in model["vocab"].items()}
    for added in data.get("added_tokens") or []:
        by_id[int(added["id"])] = added["content"]
    if sorted(by_id) != list(range(len(by_id))):
        raise InputError("tokenizer.json: token ids are not 0..n-1 (vocab_trim needs a dense id range)")
    merges = _merge_pairs(model.get("merges") or [])
    tokens = tuple(by_id[i] for i in range(len(by_id)))
    vocab = BpeVocabulary(tokens, merges, frozenset())
    results = set(vocab.merge_parts())
    added_ids = {int(a["id"]) for a in data.get("added_tokens") or []}
    unk = model.get("unk_token")
    required = {i for i in range(len(tokens)) if i not in results} | added_ids
    if unk is not None and unk in vocab.ids:
        required.add(vocab.ids[unk])
    return BpeVocabulary(tokens, merges, frozenset(required))


def merge_closure(token: int, parts: dict[int, tuple[int, int]], into: set[int]) -> set[int]:
    """``token`` and every merge part below it that ``into`` lacks."""
    new: set[int] = set()
    stack = [token]
    while stack:
        t = stack.pop()
        if t in into or t in new:
            continue
        new.add(t)
        if t in parts:
            stack.extend(parts[t])
    return new


def add_closed(kept: set[int], order: Iterable[int], parts: dict[int, tuple[int, int]], limit: int) -> set[int]:
    """``kept`` grown by each token of ``order`` in turn, with its merge closure, while the whole
    fits in ``limit`` tokens (a token whose closure does not fit is skipped, later ones may fit).
    Precondition: ``kept`` is closed under merge parts; so is the result."""
    for token in order:
        if len(kept) >= limit:
            break
        new = merge_closure(token, parts, kept)
        if len(kept) + len(new) <= limit:
            kept |= new
    return kept


def merge_rank_order(vocab: BpeVocabulary) -> list[int]:
    """The merge results in merge rank order: the earliest (most frequent when the BPE was trained) first."""
    ids = vocab.ids
    return [ids[a + b] for a, b in vocab.merges if a + b in ids]


def kept_ids(vocab: BpeVocabulary, corpus: Iterable[Sequence[int]], keep: int | None) -> list[int]:
    """The ids to keep, ascending: the required tokens plus the corpus's tokens with their merge
    closure; with ``keep`` (a vocabulary size) the corpus tokens by descending frequency while
    they fit, then the earliest-ranked merges (the most general) up to ``keep`` tokens.

    ``InputError`` naming ``keep`` when it is smaller than the required tokens."""
    parts = vocab.merge_parts()
    kept = set(vocab.required)
    if keep is not None and keep < len(kept):
        raise InputError(f"vocab_trim.keep: {keep} is smaller than the {len(kept)} tokens every trim keeps "
                         f"(base alphabet, added and special tokens)")
    counts = Counter(i for ids in corpus for i in ids)
    unknown = [i for i in counts if not 0 <= i < len(vocab.tokens)]
    if unknown:
        raise InputError(f"vocab_trim: corpus token ids {sorted(unknown)[:5]} are outside the vocabulary of {len(vocab.tokens)}")
    limit = keep if keep is not None else len(vocab.tokens)
    by_frequency = [token for token, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]
    add_closed(kept, by_frequency, parts, limit)
    if keep is not None:
        add_closed(kept, (t for t in merge_rank_order(vocab) if t in parts), parts, keep)
    return sorted(kept)


def _remap_post_processor(node: Any, new_id: dict[int, int]) -> Any:
    """Special-token ids inside a post-processor (TemplateProcessing, Bert/Roberta, Sequence)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "ids" and isinstance(value, list):
                out[key] = [new_id[int(i)] for i in value]
            elif key in ("sep", "cls") and isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                out[key] = [value[0], new_id[value[1]]]
            else:
                out[key] = _remap_post_processor(value, new_id)
        return out
    if isinstance(node, list):
        return [_remap_post_processor(v, new_id) for v in node]
    return node


def trimmed_tokenizer_json(data: dict[str, Any], kept: Sequence[int]) -> dict[str, Any]:
    """``data`` (a parsed BPE ``tokenizer.json``) with only the tokens ``kept`` (old ids; new id =
    position), the merges among them in their original rank, and added tokens and
    post-processor ids remapped. Precondition: ``kept`` holds the required tokens and is closed
    under merge parts (``kept_ids``)."""
    vocab = bpe_vocabulary(data)
    new_id = {old: new for new, old in enumerate(kept)}
    missing = sorted(set(vocab.required) - set(new_id))
    if missing:
        raise InputError(f"vocab_trim: required tokens {[vocab.tokens[i] for i in missing[:5]]} are not kept")
    out = copy.deepcopy(data)
    in_model = {int(i) for i in data["model"]["vocab"].values()}  # added tokens may or may not be listed there too
    out["model"]["vocab"] = {vocab.tokens[old]: new_id[old] for old in kept if old in in_model}
    ids = vocab.ids
    merges_as_strings = any(isinstance(m, str) for m in data["model"].get("merges") or [])
    kept_merges = [(a, b) for a, b in vocab.merges
                   if ids.get(a) in new_id and ids.get(b) in new_id and ids.get(a + b) in new_id]
    out["model"]["merges"] = [f"{a} {b}" if merges_as_strings else [a, b] for a, b in kept_merges]
    for entry in out.get("added_tokens") or []:
        entry["id"] = new_id[int(entry["id"])]
    if out.get("post_processor") is not None:
        out["post_processor"] = _remap_post_processor(out["post_processor"], new_id)
    return out


def decompositions(vocab: BpeVocabulary, kept: Sequence[int]) -> dict[int, tuple[int, ...]]:
    """For every removed token, the kept tokens its merge tree splits into (old ids), in order."""
    parts = vocab.merge_parts()
    keep = set(kept)

    def split(token: int) -> tuple[int, ...]:
        if token in keep or token not in parts:
            return (token,)
        a, b = parts[token]
        return split(a) + split(b)

    return {t: split(t) for t in range(len(vocab.tokens)) if t not in keep}


def retokenized(original: Sequence[tuple[str, ...]], trimmed: Sequence[tuple[str, ...]]) -> int:
    """How many ``original`` tokens the trimmed tokenizer does not produce as they were: all tokens of
    each pre-tokenized word (a tuple of token strings) it tokenizes differently. Both tokenizers
    share the pre-tokenizer, so the words align one to one."""
    if len(original) != len(trimmed):
        raise ValueError(f"{len(original)} words against {len(trimmed)}: the pre-tokenizers differ")
    return sum(len(a) for a, b in zip(original, trimmed) if a != b)


def tokenization_change(original: Any, trimmed: Any, texts: Sequence[str]) -> dict[str, Any]:
    """The share of ``texts``'s tokens (by ``original``, a ``HuggingFaceTokenizer``) that ``trimmed``
    tokenizes differently (whole words: ``retokenized``), and the token counts of both."""
    before = after = changed = 0
    for text in texts:
        a, b = original.words(text), trimmed.words(text)
        before, after, changed = before + sum(map(len, a)), after + sum(map(len, b)), changed + retokenized(a, b)
    return {"tokens_original": before, "tokens_trimmed": after, "retokenized_tokens": changed,
            "retokenized_share": round(changed / before, 6) if before else 0.0}
