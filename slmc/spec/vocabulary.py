"""A trimmed vocabulary as passes hand it to the driver: which old token ids stay, in new-id order.

A pass that trims a model's vocabulary (``vocab_trim``) returns a ``VocabularyMap`` in its
``PassOutcome``; the pass manager records it on the graph (``Graph.meta[VOCABULARY_META]``) and
translates the calibration samples into the new ids; the driver rewrites the tokenizer stored in
the artifact from it and compares the compressed graph with the original restricted to it.
Passes see the model's tokenizer only through ``VocabularySource`` (built by the driver).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

VOCABULARY_META = "vocabulary_map"


@dataclass(frozen=True)
class VocabularyMap:
    """``kept[new_id] = old_id``; ``decompositions[old_id]``: the kept old ids a removed token splits into.

    ``input_index``: which graph input holds the token ids."""

    kept: tuple[int, ...]
    old_size: int
    input_index: int = 0
    decompositions: dict[int, tuple[int, ...]] = field(default_factory=dict)

    @property
    def new_size(self) -> int:
        return len(self.kept)

    def old_to_new(self) -> dict[int, int]:
        return {old: new for new, old in enumerate(self.kept)}

    def to_new_ids(self, ids: Sequence[int]) -> list[int]:
        """Old ids -> new ids; a removed token becomes the kept tokens of its merge tree."""
        table = self.old_to_new()
        out: list[int] = []
        for old in ids:
            out.extend(table[t] for t in self.decompositions.get(int(old), (int(old),)))
        return out

    def to_old(self, ids: torch.Tensor) -> torch.Tensor:
        """New ids -> old ids (exact)."""
        return torch.tensor(self.kept, dtype=ids.dtype)[ids]

    def translate_sample(self, sample: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """A ``[1, S]`` token-id input in old ids -> new ids, cut back to its ``S`` tokens."""
        ids = sample[self.input_index]
        rows = [self.to_new_ids(row.tolist())[: ids.shape[-1]] for row in ids.reshape(-1, ids.shape[-1])]
        new = torch.tensor(rows, dtype=ids.dtype).reshape(ids.shape)
        return sample[: self.input_index] + (new,) + sample[self.input_index + 1 :]


class VocabularySource(Protocol):
    """The model's tokenizer as a pass over its vocabulary sees it (``slmc.frontend.vocabulary_source``)."""

    size: int

    def corpus_ids(self, text: str | None) -> list[list[int]]:
        """Token ids of ``text`` (a file relative to the recipe or a built-in text set), one list per
        document; ``None``: the recipe's calibration text."""
        ...

    def plan(self, corpus: list[list[int]], keep: int | None, input_index: int) -> VocabularyMap:
        """The tokens to keep for ``corpus`` (with ``keep``: a vocabulary size) as a map."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the report says about the tokenizer (kind, size)."""
        ...
