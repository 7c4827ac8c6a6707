"""The artifact directory: library, weights and a manifest that lists every file with its hash.

Artifacts are written into a hidden staging directory beside the destination and renamed into
place only when complete, so a killed compile leaves either no artifact or a complete one. The
hidden directories (``.NAME.staging-PID-ID`` while writing, ``.NAME.old-PID-ID`` for the artifact
being replaced) carry the writer's process id; the next compile into the same place removes those
whose process is gone, and puts back a replaced artifact whose successor never arrived.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slmc.artifact.manifest import FORMAT_VERSION, FileEntry, Manifest, manifest_text, parse_manifest
from slmc.errors import ArtifactError

__all__ = ["FORMAT_VERSION", "LIBRARY", "MANIFEST", "WEIGHTS", "StagedArtifact", "check_destination", "file_entries",
           "file_problems", "listed_file_problems", "read_manifest", "remove_stale", "sha256_file", "write_manifest"]
STAGING_MARKERS = (".staging-", ".old-")
MANIFEST = "manifest.json"
LIBRARY = "model.so"
WEIGHTS = "weights.safetensors"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entries(directory: Path) -> dict[str, FileEntry]:
    """``{relative name: (sha256, size)}`` for every file in ``directory`` except the manifest."""
    entries = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        if name != MANIFEST:
            entries[name] = FileEntry(sha256=sha256_file(path), size=path.stat().st_size)
    return entries


def write_manifest(directory: Path, manifest: Manifest) -> None:
    (directory / MANIFEST).write_text(manifest_text(manifest), encoding="utf-8")


def read_manifest(directory: Path) -> Manifest:
    """The validated manifest of the artifact in ``directory``; ``ArtifactError`` naming the file and the
    field when it is missing, not JSON, of another ``format_version`` or not a manifest."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{directory} is not an slmc artifact: {MANIFEST} is missing")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc
    return parse_manifest(text, path)


def file_problems(directory: Path, manifest: Manifest, check_hashes: bool = True) -> list[str]:
    """Every file the manifest lists that is missing, of the wrong size or (optionally) hash."""
    return listed_file_problems(directory, manifest.files, "manifest", check_hashes)


def intact_manifest(directory: Path, check_hashes: bool = True) -> Manifest:
    """The artifact's manifest, after checking every file it lists (``ArtifactError`` naming them if damaged):
    what a runtime reads before it loads anything (``slmc.load``, ``RemoteModel``)."""
    manifest = read_manifest(directory)
    problems = file_problems(directory, manifest, check_hashes=check_hashes)
    if problems:
        raise ArtifactError(f"artifact {directory} is damaged: " + "; ".join(problems))
    return manifest


def listed_file_problems(directory: Path, files: Mapping[str, Any], listed_in: str, check_hashes: bool = True) -> list[str]:
    """Every file of ``files`` (name -> an entry with ``sha256`` and ``size``) that is missing, of the
    wrong size or (optionally) hash, each naming the file and ``listed_in`` (``manifest``, ``bundle.json``)."""
    problems = []
    for name, entry in sorted(files.items()):
        path = Path(directory) / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != entry.size:
            problems.append(f"{name}: size {path.stat().st_size}, {listed_in} says {entry.size}")
        elif check_hashes and sha256_file(path) != entry.sha256:
            problems.append(f"{name}: sha256 differs from the {listed_in}")
    return problems


def check_destination(out: Path) -> None:
    """Refuse to replace anything but an earlier slmc artifact or an empty directory."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ArtifactError(f"output path {out} exists and is not a directory")
    if any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ArtifactError(f"output directory {out} is not empty and holds no slmc artifact; refusing to overwrite it")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _hidden_name(final: Path, kind: str) -> Path:
    import uuid  # writers only: slmc.load reads (issue 22.3)

    return final.parent / f".{final.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def remove_stale(final: Path) -> list[str]:
    """Clear what killed compiles into ``final`` left behind; returns what was done.

    A staging directory of a dead process is removed. A replaced artifact (``.old``) of a dead
    process is put back if ``final`` is missing (the kill fell between the two renames of
    ``commit``), else removed. Directories of live processes are left alone.
    """
    done = []
    for kind in ("old", "staging"):
        for path in sorted(final.parent.glob(f".{final.name}.{kind}-*")):
            pid_text = path.name[len(f".{final.name}.{kind}-"):].split("-", 1)[0]
            if not pid_text.isdigit() or _process_alive(int(pid_text)):
                continue
            if kind == "old" and not final.exists() and (path / MANIFEST).is_file():
                os.rename(path, final)
                done.append(f"restored {final} from {path.name}")
            else:
                shutil.rmtree(path, ignore_errors=True)
                done.append(f"removed {path.name}")
    return done


class StagedArtifact:
    """A staging directory that becomes ``final`` on ``commit`` and vanishes on failure."""

    def __init__(self, final: Path):
        self.final = Path(final)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.cleaned = remove_stale(self.final)
        self.path = _hidden_name(self.final, "staging")
        self.path.mkdir()

    def __enter__(self) -> StagedArtifact:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)

    def commit(self) -> Path:
        """Give every file and directory the permissions of the user's umask (``apply_umask``), flush
        every file, then swap the staging directory into place."""
        apply_umask(self.path)
        for path in self.path.rglob("*"):
            if path.is_file():
                with path.open("rb") as f:
                    os.fsync(f.fileno())
        check_destination(self.final)
        old = None
        if self.final.exists():
            old = _hidden_name(self.final, "old")
            os.rename(self.final, old)
        os.rename(self.path, self.final)
        _fsync_directory(self.final.parent)
        if old is not None:
            shutil.rmtree(old)
        return self.final


def current_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` can only be read by setting it,
    which would race with other threads creating files) where Linux reports it (``/proc``, 4.7+)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(root: Path) -> None:
    """Set ``root`` and everything under it to the modes a plain ``open``/``mkdir`` gives under the
    user's umask: directories and executable files (the shared library) ``0o777 & ~umask``, other
    files ``0o666 & ~umask`` (0755 / 0644 under umask 022). Files written by libraries into a
    temporary place (safetensors saves 0600) would otherwise be unreadable to a deploy user, and a
    cache entry copied with ``shutil.copytree`` would carry the writer's modes. Symlinks are left alone."""
    mask = current_umask()
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & 0o111
        path.chmod((0o777 if executable else 0o666) & ~mask)


def _fsync_directory(path: Path) -> None:
    """Make the renames in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
