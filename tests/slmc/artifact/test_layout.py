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


@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request):
    """Run the test under this umask (restored afterwards)."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def test_committed_files_and_directories_get_the_users_umask(tmp_path, umask):
    import numpy as np
    from safetensors.numpy import save_file

    from slmc.artifact.layout import current_umask

    assert current_umask() == umask
    with StagedArtifact(tmp_path / "art") as staged:
        save_file({"w": np.zeros(4, np.float32)}, str(staged.path / "weights.safetensors"))  # safetensors writes 0600
        (staged.path / "model.so").write_bytes(b"\x7fELF")
        (staged.path / "model.so").chmod(0o700)  # a linker's output: executable
        (staged.path / "tokenizer").mkdir(mode=0o700)
        (staged.path / "tokenizer" / "tokenizer.json").write_text("{}")
        (staged.path / "tokenizer" / "tokenizer.json").chmod(0o600)
        (staged.path / MANIFEST).write_text("{}")
        final = staged.commit()
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in [final, *final.rglob("*")]}
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    assert modes == {"art": dir_mode, "art/weights.safetensors": file_mode, "art/model.so": dir_mode,
                     "art/tokenizer": dir_mode, "art/tokenizer/tokenizer.json": file_mode, f"art/{MANIFEST}": file_mode}
