"""Tokenizers a model carries into its artifact, so ``slmc generate`` and ``slmc eval`` can use them.

Two kinds: ``bytes`` (UTF-8 bytes as ids, the built-in tiny-lm's) and ``huggingface`` (a
``tokenizer.json`` loaded with the ``tokenizers`` library, saved beside the library).
"""

from __future__ import annotations

import shutil
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
    """A ``tokenizer.json`` (Hugging Face ``tokenizers``), without special tokens added on encode."""

    kind = "huggingface"

    def __init__(self, tokenizer_json: Path):
        from tokenizers import Tokenizer as _Tokenizer

        self.path = Path(tokenizer_json)
        self._tok = _Tokenizer.from_file(str(self.path))

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)


def save_tokenizer(tokenizer: Any, artifact_dir: Path) -> dict[str, Any] | None:
    """Store the tokenizer in the artifact; returns the manifest entry (None without a tokenizer)."""
    if tokenizer is None:
        return None
    if isinstance(tokenizer, ByteTokenizer):
        return {"kind": "bytes"}
    if isinstance(tokenizer, HuggingFaceTokenizer):
        target = artifact_dir / TOKENIZER_DIR
        target.mkdir(exist_ok=True)
        shutil.copyfile(tokenizer.path, target / "tokenizer.json")
        return {"kind": "huggingface", "file": f"{TOKENIZER_DIR}/tokenizer.json"}
    raise TypeError(f"slmc cannot store a tokenizer of type {type(tokenizer).__name__} in an artifact")


def load_tokenizer(artifact_dir: Path, entry: dict[str, Any] | None) -> Tokenizer:
    """The tokenizer an artifact carries; ``ArtifactError`` when it has none."""
    if entry is None:
        raise ArtifactError(f"artifact {artifact_dir} carries no tokenizer")
    if entry.get("kind") == "bytes":
        return ByteTokenizer()
    if entry.get("kind") == "huggingface":
        return HuggingFaceTokenizer(Path(artifact_dir) / entry["file"])
    raise ArtifactError(f"artifact {artifact_dir}: unknown tokenizer kind {entry.get('kind')!r}")
