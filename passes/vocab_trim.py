"""``vocab_trim``: keep only the tokens a domain corpus uses; shrink the embedding and output head to them.

In a small model the vocabulary tables dominate (SmolLM-135M's 49,152 x 576 embedding is 21% of
its weights); a deployment that only sees one domain uses a fraction of the tokens. The kept
set is the corpus's tokens with their BPE merge closure plus every token no merge produces
(byte-level / byte-fallback alphabet) and every special token, so any text still tokenizes and
text covered by the kept merges tokenizes identically (``slmc.data.bpe_trim``). The embedding and
head rows of the kept tokens are gathered (a tied head shares the gather and stays tied); the
driver stores the rewritten ``tokenizer.json`` in the artifact (``PassOutcome.vocabulary``). The
trimmed model's logits over the kept tokens equal the original's restricted to them, so its
softmax renormalizes over fewer tokens: in-domain text can only gain probability, text that
needed a removed token is split into kept ones. Same idea as ExecuTorch's manual
``prune_output_vocab``, here derived from data with the tokenizer rewritten consistently.
"""

from __future__ import annotations

from pydantic import Field

from slmc.errors import InputError, NodeError
from slmc.graph.ir import Graph
from slmc.graph.vocabulary import find_vocabulary_tensors, restrict_vocabulary
from slmc.spec.pass_registry import PassConfig, PassContext, PassOutcome, register_pass
from slmc.spec.vocabulary import VOCABULARY_META

_WEIGHT_PASSES = ("quantize", "lowrank", "prune", "prune_channels", "cast_weights", "recover")


class VocabTrimConfig(PassConfig):
    text: str | None = Field(None, min_length=1, description="domain corpus: a UTF-8 text file (relative to the recipe) or a "
                                                             "built-in text set (stdlib-train/email); default: the calibration text")
    keep: int | None = Field(None, ge=2, le=10_000_000,
                             description="vocabulary size to keep: the corpus's most frequent tokens while they fit, then the "
                                         "most general merges; default: every token the corpus uses")

    def needs_calibration(self) -> str | None:
        return None if self.text is not None else "vocab_trim without 'text' takes its corpus from the calibration text"

    def text_files(self) -> dict[str, str]:
        return {"text": self.text} if self.text is not None else {}


@register_pass("vocab_trim", config=VocabTrimConfig, must_follow=("constant_folding",), must_precede=_WEIGHT_PASSES, lossy=True)
def vocab_trim(graph: Graph, config: VocabTrimConfig, context: PassContext) -> PassOutcome:
    """Keep the tokens a domain corpus uses (plus byte-level and special tokens); gather the embedding and head rows.

    Preconditions: a causal LM whose logits come from a linear head, with a BPE tokenizer; it runs
    before passes that quantize or factor the embedding or head.
    """
    if context.vocabulary is None:
        raise InputError("vocab_trim needs the model's Hugging Face BPE tokenizer (tokenizer.json), and the model has none")
    if VOCABULARY_META in graph.meta:
        raise NodeError("graph", "the vocabulary was trimmed by an earlier vocab_trim step; give one")
    found = find_vocabulary_tensors(graph)
    if found.size != context.vocabulary.size:
        raise NodeError(found.embedding, f"the embedding has {found.size} rows and the tokenizer {context.vocabulary.size} tokens")
    corpus = context.vocabulary.corpus_ids(config.text)
    vocabulary = context.vocabulary.plan(corpus, config.keep, found.input_index)
    before = graph.weight_bytes()
    found, saved = restrict_vocabulary(graph, vocabulary)
    graph.meta[VOCABULARY_META] = vocabulary
    corpus_tokens = sum(len(ids) for ids in corpus)
    stats = {
        "tokens_before": found.size,
        "tokens_kept": vocabulary.new_size,
        "corpus_tokens": corpus_tokens,
        "corpus_distinct_tokens": len({i for ids in corpus for i in ids}),
        "tied_head": found.tied,
        "embedding_head_bytes_saved": saved,
        "weight_bytes_saved_share": round(saved / before, 4) if before else 0.0,
        "tokenizer": context.vocabulary.describe(),
    }
    return PassOutcome(graph, stats, vocabulary=vocabulary)
