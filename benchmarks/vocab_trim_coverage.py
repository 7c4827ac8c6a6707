"""Can one stdlib domain halve a fixture-style BPE vocabulary and still tokenize its held-out text identically?

Issue 20.1's `vocab_trim` acceptance asks, on the fixture LM, for identical tokenization of a domain's
held-out text while the embedding and head lose at least half their rows. A trimmed BPE tokenizes a
text identically exactly when every token of that text stays (the kept set is closed under merge
parts: ``slmc.data.bpe_trim``), so this is a question about token sets and needs no model.

For each vocabulary size, a byte-level BPE is trained exactly as ``slmc/models/train_fixture_lm.py``
trains the fixture's (same split, same trainer, only ``vocab_size`` differs). For each stdlib package
with both training and held-out modules (the domain), the kept set is built from the domain's
**training** modules only (never the held-out text, which would be testing on the trim corpus):

* closure: the domain's tokens + merge closure + byte alphabet + specials (``vocab_trim`` without ``keep``);
* at ``keep = V/2``: the domain's tokens by frequency while they fit, then filled up to V/2 by one of
  three orders of the whole training corpus: merge rank (``vocab_trim``'s ``keep`` rule), token
  frequency, and document frequency (how many training modules use the token);
* the smallest kept set, over the three fill orders, that covers the held-out text exactly
  (how far from V/2 "identical" is).

Prints a markdown table (docs/dev-notes.md, "Session 11: can a domain halve the fixture's vocabulary").
Tokenizer training only (one thread, about 10-60 s per size on this machine):

    python benchmarks/vocab_trim_coverage.py 4096 8192 16384 32768 65536
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterable, Sequence

from slmc.data.bpe_trim import BpeVocabulary, add_closed, bpe_vocabulary, kept_ids, merge_closure, merge_rank_order
from slmc.models.train_fixture_lm import read_module, split_modules, stdlib_dir, train_tokenizer


def package(module: str) -> str | None:
    """The top-level package of a stdlib module path (None for a top-level module)."""
    return module.split("/", 1)[0] if "/" in module else None


def smallest_exact_keep(vocab: BpeVocabulary, base: set[int], order: Iterable[int], needed: set[int]) -> int:
    """The size of ``base`` grown along ``order`` (with merge closures) when it first holds every token
    of ``needed``; the whole vocabulary when ``order`` never reaches one of them."""
    parts, kept, missing = vocab.merge_parts(), set(base), needed - base
    for token in order:
        if not missing:
            break
        new = merge_closure(token, parts, kept)
        kept |= new
        missing -= new
    return len(kept) if not missing else len(vocab.tokens)


def outside(documents: Sequence[Sequence[int]], kept: set[int]) -> int:
    """How many tokens of ``documents`` are not in ``kept`` (each one is retokenized after the trim)."""
    return sum(1 for ids in documents for token in ids if token not in kept)


def study(size: int, train: dict[str, str], heldout: dict[str, str]) -> list[dict]:
    """One row per domain for a BPE of ``size`` tokens trained on ``train``'s texts."""
    tokenizer = train_tokenizer(list(train.values()), vocab_size=size)
    vocab = bpe_vocabulary(json.loads(tokenizer.to_str()))

    def encode(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]

    general = encode(list(train.values()))
    frequency = Counter(t for ids in general for t in ids)
    documents = Counter(t for ids in general for t in set(ids))
    orders = {
        "merge rank": merge_rank_order(vocab),
        "frequency": sorted(frequency, key=lambda t: (-frequency[t], t)),
        "doc frequency": sorted(documents, key=lambda t: (-documents[t], -frequency[t], t)),
    }
    parts, half = vocab.merge_parts(), len(vocab.tokens) // 2
    domains = sorted({package(m) for m in heldout} & {package(m) for m in train} - {None})
    rows = []
    for domain in domains:
        domain_train = encode([t for m, t in train.items() if package(m) == domain])
        domain_heldout = encode([t for m, t in heldout.items() if package(m) == domain])
        closure = set(kept_ids(vocab, domain_train, None))
        by_frequency = sorted(Counter(t for ids in domain_train for t in ids).items(), key=lambda kv: (-kv[1], kv[0]))
        domain_half = add_closed(set(vocab.required), (t for t, _ in by_frequency), parts, half)
        needed = {t for ids in domain_heldout for t in ids}
        rows.append({
            "vocab": len(vocab.tokens), "domain": domain, "closure": len(closure),
            "heldout_tokens": sum(map(len, domain_heldout)), "outside_closure": outside(domain_heldout, closure),
            "outside_half": {name: outside(domain_heldout, add_closed(set(domain_half), order, parts, half))
                             for name, order in orders.items()},
            "exact_keep": min(smallest_exact_keep(vocab, closure, order, needed) for order in orders.values()),
        })
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| V | domain | closure | held-out tokens | outside closure | outside at keep V/2: merge rank / frequency / doc frequency | smallest exact keep |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        v, n = r["vocab"], r["heldout_tokens"]
        half = " / ".join(f"{c} ({c / n:.2%})" for c in r["outside_half"].values())
        lines.append(f"| {v:,} | {r['domain']} | {r['closure']:,} ({r['closure'] / v:.0%}) | {n:,} | "
                     f"{r['outside_closure']} ({r['outside_closure'] / n:.2%}) | {half} | "
                     f"{r['exact_keep']:,} ({r['exact_keep'] / v:.1%}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="+", type=int, help="BPE vocabulary sizes to train")
    args = parser.parse_args()
    root = stdlib_dir()
    train_modules, heldout_modules = split_modules(root)
    train = {m: read_module(m, root) for m in train_modules}
    heldout = {m: read_module(m, root) for m in heldout_modules}
    rows = [row for size in args.sizes for row in study(size, train, heldout)]
    print(markdown(rows))


if __name__ == "__main__":
    main()
