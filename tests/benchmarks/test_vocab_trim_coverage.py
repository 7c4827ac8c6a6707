"""benchmarks/vocab_trim_coverage.py on the fixture's own tokenizer (no BPE training): the held-out
count and the smallest kept set that covers a text exactly."""

from __future__ import annotations

import json
import os
import runpy
from pathlib import Path
from types import SimpleNamespace

from tokenizers import Tokenizer

from slmc.data.bpe_trim import bpe_vocabulary, kept_ids, merge_rank_order

REPO = Path(__file__).resolve().parents[2]
TOKENIZER = REPO / "slmc" / "models" / "fixture_lm" / "tokenizer.json"


def _run_without_its_environment(path: Path) -> dict:
    """The script's namespace; the variables ``train_fixture_lm`` sets on import (OMP_NUM_THREADS=1 and others, for
    its own training run) are put back, so they do not reach every later test of this process and its children."""
    saved = dict(os.environ)
    try:
        return runpy.run_path(str(path))
    finally:
        os.environ.clear()
        os.environ.update(saved)


coverage = SimpleNamespace(**_run_without_its_environment(REPO / "benchmarks" / "vocab_trim_coverage.py"))


def test_smallest_exact_keep_covers_the_text_and_nothing_is_needed_when_the_domain_covers_it():
    data = json.loads(TOKENIZER.read_text(encoding="utf-8"))
    vocab, tokenizer = bpe_vocabulary(data), Tokenizer.from_str(json.dumps(data))
    domain = [tokenizer.encode("def parse(self, text):\n    return self.parser.parse(text)\n").ids]
    heldout = [tokenizer.encode("class HeaderRegistry:\n    def __call__(self, name, value):\n").ids]
    closure = set(kept_ids(vocab, domain, None))
    needed = {t for ids in heldout for t in ids}
    assert coverage.outside(domain, closure) == 0 and coverage.outside(heldout, closure) > 0
    assert coverage.smallest_exact_keep(vocab, closure, merge_rank_order(vocab), {t for ids in domain for t in ids}) == len(closure)
    size = coverage.smallest_exact_keep(vocab, closure, merge_rank_order(vocab), needed)
    assert len(closure) < size < len(vocab.tokens)
    assert coverage.package("email/header.py") == "email" and coverage.package("os.py") is None
