"""BPE vocabulary trimming on tokenizers trained here (byte-level like GPT-2, and with byte fallback
and a TemplateProcessing post-processor like Llama-2): required tokens, merge closure, ``keep``,
identical tokenization of covered text, post-processor ids, and the retokenization count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from slmc.data.bpe_trim import (add_closed, bpe_vocabulary, decompositions, kept_ids, merge_closure, merge_rank_order,
                                retokenized, tokenization_change, trimmed_tokenizer_json)
from slmc.data.tokenizer import HuggingFaceTokenizer
from slmc.errors import InputError

TRAIN = ["def parse(self, text):\n    return self.parser.parse(text)\n" * 3,
         "The header encodes the message with base64 and quoted-printable.\n" * 3,
         "for index, value in enumerate(values):\n    total += value * index\n" * 3]
DOMAIN = ["def parse(self, text):\n    return text\n"]


def byte_level() -> dict:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TRAIN, trainer)
    return json.loads(tok.to_str())


def byte_fallback() -> dict:
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(TRAIN, trainers.BpeTrainer(vocab_size=500, special_tokens=specials, show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return json.loads(tok.to_str())


def corpus(data: dict, texts: list[str]) -> list[list[int]]:
    tok = Tokenizer.from_str(json.dumps(data))
    return [tok.encode(t, add_special_tokens=False).ids for t in texts]


@pytest.mark.parametrize("make", [byte_level, byte_fallback])
def test_covered_text_tokenizes_identically_and_any_text_still_does(make):
    data = make()
    vocab = bpe_vocabulary(data)
    kept = kept_ids(vocab, corpus(data, DOMAIN), None)
    assert vocab.required <= set(kept) and len(kept) < len(vocab.tokens)
    parts = vocab.merge_parts()
    assert all(set(parts[t]) <= set(kept) for t in kept if t in parts)  # closed under merge parts
    old, new = Tokenizer.from_str(json.dumps(data)), Tokenizer.from_str(json.dumps(trimmed_tokenizer_json(data, kept)))
    table = {o: n for n, o in enumerate(kept)}
    for text in DOMAIN:
        assert new.encode(text).ids == [table[i] for i in old.encode(text).ids]
    other = "Totally different words: quoted-printable ünïcode 🙂"
    assert new.decode(new.encode(other, add_special_tokens=False).ids).strip() == old.decode(old.encode(other, add_special_tokens=False).ids).strip()


def test_post_processor_ids_are_remapped():
    data = byte_fallback()
    kept = kept_ids(bpe_vocabulary(data), corpus(data, DOMAIN), None)
    trimmed = trimmed_tokenizer_json(data, kept)
    bos = trimmed["post_processor"]["special_tokens"]["<s>"]["ids"][0]
    assert Tokenizer.from_str(json.dumps(trimmed)).encode("def").ids[0] == bos == kept.index(data["model"]["vocab"]["<s>"])


def test_keep_fills_with_the_most_general_merges_and_stays_closed():
    data = byte_level()
    vocab = bpe_vocabulary(data)
    kept = kept_ids(vocab, corpus(data, DOMAIN), len(vocab.required) + 20)
    assert len(kept) == len(vocab.required) + 20
    parts = vocab.merge_parts()
    assert all(set(parts[t]) <= set(kept) for t in kept if t in parts)
    with pytest.raises(InputError, match="vocab_trim.keep"):
        kept_ids(vocab, corpus(data, DOMAIN), len(vocab.required) - 1)


def test_decompositions_split_removed_tokens_into_kept_ones():
    data = byte_level()
    vocab = bpe_vocabulary(data)
    kept = kept_ids(vocab, [], None)  # only the required tokens
    split = decompositions(vocab, kept)
    assert set(split) == set(range(len(vocab.tokens))) - set(kept)
    assert all("".join(vocab.tokens[i] for i in parts) == vocab.tokens[t] for t, parts in split.items())


def test_retokenized_counts_the_tokens_of_words_tokenized_differently():
    assert retokenized([("de", "f"), (" parse",)], [("de", "f"), (" parse",)]) == 0
    assert retokenized([("de", "f"), (" parse",)], [("de", "f"), (" par", "se")]) == 1
    assert retokenized([("de", "f"), (" parse",)], [("d", "e", "f"), (" parse",)]) == 2
    data = byte_level()
    kept = kept_ids(bpe_vocabulary(data), corpus(data, DOMAIN), None)
    original = HuggingFaceTokenizer(Path("trained/tokenizer.json"), text=json.dumps(data))
    trimmed = original.rewritten(trimmed_tokenizer_json(data, kept))
    change = tokenization_change(original, trimmed, DOMAIN)
    assert change["retokenized_tokens"] == 0 and change["tokens_original"] == change["tokens_trimmed"]
    uncovered = tokenization_change(original, trimmed, ["The header encodes the message"])
    assert 0 < uncovered["retokenized_tokens"] <= uncovered["tokens_original"] < uncovered["tokens_trimmed"]


def test_non_bpe_tokenizer_is_refused():
    with pytest.raises(InputError, match="BPE"):
        bpe_vocabulary({"model": {"type": "WordPiece", "vocab": {}}})


def test_add_closed_fills_in_the_given_order_within_the_limit_and_stays_closed():
    vocab = bpe_vocabulary(byte_level())
    parts = vocab.merge_parts()
    order = merge_rank_order(vocab)
    assert order and all(t in parts for t in order)
    limit = len(vocab.required) + 10
    earliest = add_closed(set(vocab.required), order, parts, limit)
    latest = add_closed(set(vocab.required), reversed(order), parts, limit)
    for kept in (earliest, latest):
        assert len(kept) <= limit and all(set(parts[t]) <= kept for t in kept if t in parts)
    assert set(order[:10]) == earliest - vocab.required  # each early merge's parts are bytes or earlier merges
    assert merge_closure(order[-1], parts, set(vocab.required)) <= latest and latest != earliest
