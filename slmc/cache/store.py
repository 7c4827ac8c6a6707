"""The compile cache: complete artifact directories stored under a content-addressed key.

Layout of a cache directory (``--cache-dir`` or ``SLMC_CACHE_DIR``)::

    CACHE/lock                   flock: shared while reading or inserting, exclusive while pruning
    CACHE/entries/KEY/artifact/  the artifact exactly as the compile that missed wrote it
    CACHE/entries/KEY/entry.json what the key was made of, size, creation time (mtime = last use)
    CACHE/tmp/                   entries being written (``KEY.PID.RANDOM``)

An entry is written completely into ``tmp/`` and then renamed into ``entries/`` in one step, so
a reader sees a complete entry or none. Two writers of one key race harmlessly: the rename of
the second fails because the first entry exists, and the second discards its copy (builds are
deterministic, so both copies are the same bytes). A hit copies the entry into the output's
staging directory, re-checks every file's size and sha256 against the manifest, and renames it
into place (``slmc.artifact.layout.StagedArtifact``); a damaged entry is removed and counts as a miss.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slmc.artifact.layout import MANIFEST, StagedArtifact, file_problems, read_manifest
from slmc.artifact.manifest import Manifest
from slmc.errors import ArtifactError, InputError

ENV_VAR = "SLMC_CACHE_DIR"
ENTRY_FORMAT = 1
ENTRY_FILE = "entry.json"
ARTIFACT_DIR = "artifact"


def resolve_cache_dir(cache_dir: str | Path | None, enabled: bool = True) -> Path | None:
    """The cache directory: ``cache_dir``, else ``$SLMC_CACHE_DIR``, else none (no caching).

    ``enabled=False`` (``--no-cache``) turns caching off whatever is configured.
    """
    if not enabled:
        return None
    chosen = cache_dir if cache_dir is not None else os.environ.get(ENV_VAR) or None
    return Path(chosen).expanduser() if chosen is not None else None


@dataclass(frozen=True)
class Entry:
    """One cached artifact: its key, what the key was made of, size and times."""

    key: str
    path: Path
    info: dict[str, Any]
    bytes: int
    created: float
    last_used: float

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "model": self.info.get("model"), "target": self.info.get("target"),
                "bytes": self.bytes, "created": self.created, "last_used": self.last_used, "path": str(self.path)}


def _directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class CompileCache:
    """A cache directory (created on first use). Raises ``InputError`` when it cannot be created."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        try:
            (self.root / "entries").mkdir(parents=True, exist_ok=True)
            (self.root / "tmp").mkdir(exist_ok=True)
        except OSError as exc:
            raise InputError(f"cache directory {self.root} cannot be created: {exc.strerror}") from exc
        if not os.access(self.root, os.W_OK):
            raise InputError(f"cache directory {self.root} is not writable")

    @contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        with (self.root / "lock").open("a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def entry_path(self, key: str) -> Path:
        return self.root / "entries" / key

    def fetch(self, key: str, out_dir: Path) -> Manifest | None:
        """Copy entry ``key`` into ``out_dir`` (atomically, hashes re-checked); its manifest, or None on a miss.

        Precondition: ``check_destination(out_dir)`` passed.
        """
        with self._locked(exclusive=False):
            source = self.entry_path(key) / ARTIFACT_DIR
            if not (source / MANIFEST).is_file():
                return None
            with StagedArtifact(out_dir) as staged:
                try:
                    shutil.copytree(source, staged.path, dirs_exist_ok=True)
                    manifest = read_manifest(staged.path)
                    problems = file_problems(staged.path, manifest)
                except (OSError, shutil.Error):
                    return None  # removed under us by a reader that found it damaged
                except ArtifactError as exc:
                    problems = [str(exc)]
                if problems:
                    self._discard(key)
                    return None
                staged.commit()
            os.utime(self.entry_path(key) / ENTRY_FILE)  # last use, for `slmc cache prune`
        return manifest

    def store(self, key: str, artifact: Path, info: dict[str, Any]) -> bool:
        """Insert a copy of the committed ``artifact`` under ``key``; False if another writer was first."""
        tmp = self.root / "tmp" / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:12]}"
        try:
            with self._locked(exclusive=False):  # prune (exclusive) clears tmp/, so never while writing
                shutil.copytree(artifact, tmp / ARTIFACT_DIR)
                (tmp / ENTRY_FILE).write_text(json.dumps({"format": ENTRY_FORMAT, "key": key, "created": time.time(), **info},
                                                         indent=2, sort_keys=True) + "\n", encoding="utf-8")
                try:
                    os.rename(tmp, self.entry_path(key))
                except OSError:
                    if not (self.entry_path(key) / ENTRY_FILE).is_file():
                        raise
                    return False  # an identical entry arrived first
            return True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _discard(self, key: str) -> None:
        """Remove an entry without leaving a partial one visible (renamed away first)."""
        path = self.entry_path(key)
        doomed = self.root / "tmp" / f"{key}.discard.{uuid.uuid4().hex[:12]}"
        try:
            os.rename(path, doomed)
        except OSError:
            return
        shutil.rmtree(doomed, ignore_errors=True)

    def entries(self) -> list[Entry]:
        """Every complete entry, most recently used first."""
        found = []
        for path in (self.root / "entries").iterdir():
            meta = path / ENTRY_FILE
            try:
                info = json.loads(meta.read_text(encoding="utf-8"))
                used = meta.stat().st_mtime
            except (OSError, json.JSONDecodeError):
                continue  # removed meanwhile, or not an slmc entry
            found.append(Entry(path.name, path, info, _directory_bytes(path / ARTIFACT_DIR), float(info.get("created", used)), used))
        return sorted(found, key=lambda e: e.last_used, reverse=True)

    def prune(self, older_than: float | None = None, max_bytes: int | None = None, everything: bool = False) -> list[Entry]:
        """Remove entries unused for ``older_than`` seconds, then the least recently used ones until
        the rest fit in ``max_bytes``; ``everything`` removes all. Also clears leftovers of killed
        writers in ``tmp/``. Returns the removed entries."""
        with self._locked(exclusive=True):
            for leftover in (self.root / "tmp").iterdir():
                shutil.rmtree(leftover, ignore_errors=True)
            entries = self.entries()
            now = time.time()
            removed = [e for e in entries if everything or (older_than is not None and now - e.last_used > older_than)]
            kept = [e for e in entries if e not in removed]
            if max_bytes is not None:
                total = sum(e.bytes for e in kept)
                for entry in reversed(list(kept)):  # least recently used first
                    if total <= max_bytes:
                        break
                    removed.append(entry)
                    total -= entry.bytes
            for entry in removed:
                self._discard(entry.key)
        return removed
