"""Tokenizers a model carries into its artifact, so ``slmc generate`` and ``slmc eval`` can use them.

Two kinds: ``bytes`` (UTF-8 bytes as ids, the built-in tiny-lm's) and ``huggingface`` (a
``tokenizer.json`` loaded with the ``tokenizers`` library, saved beside the library).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Protocol

from slmc.errors import ArtifactError

TOKENIZER_DIR = "tokenizer"


class Tokenizer(Protocol):
    kind: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens; invalid byte sequences decode with replacement characters."""

    kind = "bytes"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


class HuggingFaceTokenizer:
    """A ``tokenizer.json`` (Hugging Face ``tokenizers``).

    ``encode`` adds no special tokens (prompts); ``encode_document`` adds the tokenizer's own
    (``[CLS] ... [SEP]`` for BERT) and, for decoders whose ``tokenizer_config.json`` names a
    ``bos_token`` that the tokenizer does not add itself, starts with it (documents as in training).
    """

    kind = "huggingface"

    def __init__(self, tokenizer_json: Path, bos_token: str | None = None, eos_token: str | None = None,
                 text: str | None = None):
        """``text``: the ``tokenizer.json`` content itself (a rewritten tokenizer); ``tokenizer_json``
        then only names where it came from (its ``tokenizer_config.json`` is still read)."""
        from tokenizers import Tokenizer as _Tokenizer

        self.path = Path(tokenizer_json)
        if text is None:
            raw = self.path.read_bytes()
            text = (gzip.decompress(raw) if self.path.suffix == ".gz" else raw).decode("utf-8")  # .gz: as in artifacts
        self.text = text
        self._tok = _Tokenizer.from_str(text)
        self._tok.no_padding()  # some tokenizer.json files (MiniLM's) pad every input to a fixed length
        self._tok.no_truncation()
        config = self.path.with_name("tokenizer_config.json")
        if config.is_file() and (bos_token is None or eos_token is None):
            settings = json.loads(config.read_text(encoding="utf-8"))
            bos_token = _token_text(settings.get("bos_token")) if bos_token is None else bos_token
            eos_token = _token_text(settings.get("eos_token")) if eos_token is None else eos_token
        self.bos_token = bos_token
        self.eos_token = eos_token  # where generation stops (the native runtime reads it from the manifest)
        self.bos_id = self._tok.token_to_id(bos_token) if bos_token else None

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_document(self, text: str) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=True).ids
        if self.bos_id is not None and ids[:1] != [self.bos_id]:
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)

    def words(self, text: str) -> list[tuple[str, ...]]:
        """The token strings of ``text`` (no special tokens) grouped by pre-tokenized word."""
        encoding = self._tok.encode(text, add_special_tokens=False)
        words: list[tuple[str, ...]] = []
        last = object()
        for token, word in zip(encoding.tokens, encoding.word_ids):
            if word is None or word != last:
                words.append((token,))
            else:
                words[-1] += (token,)
            last = word
        return words

    def json(self) -> dict[str, Any]:
        """The parsed ``tokenizer.json``."""
        return json.loads(self.text)

    def rewritten(self, data: dict[str, Any]) -> HuggingFaceTokenizer:
        """This tokenizer with ``tokenizer.json`` replaced by ``data`` (same bos/eos tokens)."""
        return HuggingFaceTokenizer(self.path, self.bos_token, self.eos_token,
                                    text=json.dumps(data, ensure_ascii=False, separators=(",", ":")))

    def token_id(self, token: str) -> int | None:
        """The id of ``token`` (e.g. the EOS token's text), None if the vocabulary lacks it."""
        return self._tok.token_to_id(token)


def _token_text(value: Any) -> str | None:
    """A ``tokenizer_config.json`` token entry: a string or an AddedToken dict with ``content``."""
    return value.get("content") if isinstance(value, dict) else value


def save_tokenizer(tokenizer: Any, artifact_dir: Path) -> dict[str, Any] | None:
    """Store the tokenizer in the artifact; returns the manifest entry (None without a tokenizer)."""
    if tokenizer is None:
        return None
    if isinstance(tokenizer, ByteTokenizer):
        return {"kind": "bytes"}
    if isinstance(tokenizer, HuggingFaceTokenizer):
        target = artifact_dir / TOKENIZER_DIR
        target.mkdir(exist_ok=True)
        data = gzip.compress(tokenizer.text.encode("utf-8"), compresslevel=9, mtime=0)  # mtime 0: byte-identical artifacts
        (target / "tokenizer.json.gz").write_bytes(data)
        entry = {"kind": "huggingface", "file": f"{TOKENIZER_DIR}/tokenizer.json.gz", "bos_token": tokenizer.bos_token}
        if tokenizer.eos_token is not None:
            entry["eos_token"] = tokenizer.eos_token
        return entry
    raise TypeError(f"slmc cannot store a tokenizer of type {type(tokenizer).__name__} in an artifact")


def load_tokenizer(artifact_dir: Path, entry: dict[str, Any] | None) -> Tokenizer:
    """The tokenizer an artifact carries; ``ArtifactError`` when it has none."""
    if entry is None:
        raise ArtifactError(f"artifact {artifact_dir} carries no tokenizer")
    if entry.get("kind") == "bytes":
        return ByteTokenizer()
    if entry.get("kind") == "huggingface":
        return HuggingFaceTokenizer(Path(artifact_dir) / entry["file"], entry.get("bos_token"), entry.get("eos_token"))
    raise ArtifactError(f"artifact {artifact_dir}: unknown tokenizer kind {entry.get('kind')!r}")
