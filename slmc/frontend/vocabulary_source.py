"""The model's tokenizer as the ``vocab_trim`` pass sees it (``slmc.spec.vocabulary.VocabularySource``),
and the tokenizer an artifact stores after the vocabulary was trimmed.

The corpus is the pass's ``text`` (a file relative to the recipe, or a built-in text set) or, by
default, the recipe's calibration text, tokenized with the model's own tokenizer.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from slmc.data.bpe_trim import BpeVocabulary, bpe_vocabulary, decompositions, kept_ids, trimmed_tokenizer_json
from slmc.data.texts import is_text_set, load_texts
from slmc.data.tokenizer import HuggingFaceTokenizer
from slmc.errors import InputError
from slmc.graph.ir import ModelSpec
from slmc.spec.recipe import Recipe
from slmc.spec.vocabulary import VocabularyMap


class TokenizerVocabulary:
    """A Hugging Face BPE tokenizer and the recipe its corpus paths are relative to."""

    def __init__(self, tokenizer: HuggingFaceTokenizer, recipe: Recipe):
        self.tokenizer = tokenizer
        self.recipe = recipe

    @property
    def size(self) -> int:
        """Tokens in the vocabulary (parsed when a pass asks: only ``vocab_trim`` needs a BPE tokenizer)."""
        return len(self.bpe.tokens)

    @cached_property
    def bpe(self) -> BpeVocabulary:
        return bpe_vocabulary(self.tokenizer.json())

    def corpus_ids(self, text: str | None) -> list[list[int]]:
        if text is None:
            calibration = self.recipe.calibration
            if calibration is None or calibration.text is None:
                raise InputError(f"{self.recipe.source}: vocab_trim has no 'text' and the recipe's calibration has no text "
                                 f"to take the corpus from")
            text = calibration.text
        documents = load_texts(text if is_text_set(text) else self.recipe.resolve_path(text))
        return [self.tokenizer.encode(document) for document in documents]

    def plan(self, corpus: list[list[int]], keep: int | None, input_index: int) -> VocabularyMap:
        kept = kept_ids(self.bpe, corpus, keep)
        return VocabularyMap(tuple(kept), self.size, input_index, decompositions(self.bpe, kept))

    def describe(self) -> dict[str, Any]:
        return {"kind": self.tokenizer.kind, "model": "BPE", "tokens": self.size, "merges": len(self.bpe.merges)}


def vocabulary_source(spec: ModelSpec, recipe: Recipe) -> TokenizerVocabulary | None:
    """What ``PassContext.vocabulary`` holds: the model's Hugging Face tokenizer (None without one)."""
    return TokenizerVocabulary(spec.tokenizer, recipe) if isinstance(spec.tokenizer, HuggingFaceTokenizer) else None


def trimmed_tokenizer(tokenizer: Any, vocabulary: VocabularyMap | None) -> Any:
    """``tokenizer`` with its ``tokenizer.json`` restricted to ``vocabulary`` (unchanged without one)."""
    if vocabulary is None:
        return tokenizer
    return tokenizer.rewritten(trimmed_tokenizer_json(tokenizer.json(), vocabulary.kept))
