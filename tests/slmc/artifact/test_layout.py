"""Staging and replacing artifact directories; what killed compiles leave behind is cleared."""

import os
import subprocess
import sys

import pytest

from slmc.artifact.layout import MANIFEST, StagedArtifact, remove_stale
from slmc.errors import ArtifactError


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def fake_artifact(path, text="x"):
    path.mkdir(parents=True)
    (path / MANIFEST).write_text("{}")
    (path / "model.so").write_text(text)
    return path


def test_commit_renames_the_staging_directory_into_place(tmp_path):
    final = tmp_path / "art"
    with StagedArtifact(final) as staged:
        assert staged.path.name.startswith(f".art.staging-{os.getpid()}-")
        (staged.path / MANIFEST).write_text("{}")
        staged.commit()
    assert (final / MANIFEST).is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_a_failure_removes_the_staging_directory(tmp_path):
    with pytest.raises(RuntimeError):
        with StagedArtifact(tmp_path / "art"):
            raise RuntimeError("compile failed")
    assert list(tmp_path.iterdir()) == []


def test_leftovers_of_dead_compiles_are_removed_and_live_ones_kept(tmp_path):
    final = fake_artifact(tmp_path / "art", "current")
    pid = dead_pid()
    dead_staging = fake_artifact(tmp_path / f".art.staging-{pid}-0123456789ab")
    dead_old = fake_artifact(tmp_path / f".art.old-{pid}-0123456789ab")
    live_staging = fake_artifact(tmp_path / f".art.staging-{os.getpid()}-0123456789ab")
    other = fake_artifact(tmp_path / ".artist.staging-1-0123456789ab")
    done = remove_stale(final)
    assert sorted(done) == sorted([f"removed {dead_staging.name}", f"removed {dead_old.name}"])
    assert not dead_staging.exists() and not dead_old.exists() and live_staging.exists() and other.exists()
    assert (final / "model.so").read_text() == "current"


def test_a_replaced_artifact_is_put_back_when_its_successor_never_arrived(tmp_path):
    """A kill between commit's two renames leaves the previous artifact as .old and no artifact."""
    final = tmp_path / "art"
    old = fake_artifact(tmp_path / f".art.old-{dead_pid()}-0123456789ab", "previous")
    with StagedArtifact(final) as staged:
        assert staged.cleaned == [f"restored {final} from {old.name}"]
        assert (final / "model.so").read_text() == "previous"


def test_commit_still_refuses_a_foreign_directory(tmp_path):
    final = tmp_path / "art"
    with StagedArtifact(final) as staged:
        final.mkdir()
        (final / "notes.txt").write_text("mine")
        with pytest.raises(ArtifactError, match="refusing to overwrite"):
            staged.commit()
    assert (final / "notes.txt").read_text() == "mine"
