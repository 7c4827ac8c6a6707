"""The compile cache: a hit is byte-identical, each input changes the key, concurrent compiles share it safely."""

import json
import os
import shutil
import subprocess
import time

import numpy as np
import pytest
from click.testing import CliRunner

from slmc.cache.store import ENV_VAR, CompileCache, resolve_cache_dir
from slmc.cache.key import cache_key, key_components
from slmc.errors import InputError


def components(model, recipe_path, target="host"):
    """The key components exactly as ``slmc.compile`` computes them (load, fit context, trace, calibrate)."""
    from slmc.driver.compress import trace_and_calibrate
    from slmc.models.context_length import fit_context
    from slmc.frontend.model_source import load_model
    from slmc.spec.recipe import load_recipe
    from slmc.spec.target import load_target

    recipe = load_recipe(recipe_path)
    target_desc = load_target(target)
    spec = load_model(model)
    fit_context(spec, recipe, target_desc)
    original, calibration = trace_and_calibrate(spec, recipe, target_desc, {})
    return key_components(spec, original, recipe, target_desc, calibration, None)


def assert_only_changed(cached_compile, changed, expected, tmp_path):
    base = cached_compile.result.cache["components"]
    assert [k for k in base if base[k] != changed[k]] == [expected]
    assert CompileCache(cached_compile.cache).fetch(cache_key(changed), tmp_path / "out") is None  # a miss
    assert not (tmp_path / "out").exists()


def test_second_compile_is_a_byte_identical_hit(cached_compile, tmp_path):
    import slmc

    result = slmc.compile("tiny-lm", cached_compile.recipe, "host", tmp_path / "second", cache_dir=cached_compile.cache)
    assert result.cache["status"] == "hit" and result.cache["key"] == cached_compile.result.cache["key"]
    assert result.to_json()["cache"]["status"] == "hit" and "passes" not in result.timings  # nothing was compiled
    first = sorted(p.relative_to(cached_compile.artifact) for p in cached_compile.artifact.rglob("*") if p.is_file())
    second = sorted(p.relative_to(result.artifact) for p in result.artifact.rglob("*") if p.is_file())
    assert first == second and "manifest.json" in {p.name for p in first}
    for name in first:  # the manifest too: timings are those of the compile that stored the entry
        assert (cached_compile.artifact / name).read_bytes() == (result.artifact / name).read_bytes(), name
    assert result.manifest == cached_compile.result.manifest


def test_the_key_is_what_compile_used(cached_compile):
    assert cache_key(components("tiny-lm", cached_compile.recipe)) == cached_compile.result.cache["key"]


def test_changed_weights_miss(cached_compile, tmp_path):
    from slmc.models import tiny_lm

    assert_only_changed(cached_compile, components(tiny_lm.build(seed=1), cached_compile.recipe), "model", tmp_path)


def test_changed_recipe_misses(cached_compile, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(cached_compile.recipe.read_text().replace("num_samples: 1", "num_samples: 1\n  atol: 2.0e-4"))
    assert_only_changed(cached_compile, components("tiny-lm", recipe), "recipe", tmp_path)


def test_changed_target_misses(cached_compile, tmp_path):
    from slmc.spec.target import load_target

    host = load_target("host")
    other = host.model_copy(update={"tvm": host.tvm.model_copy(update={"num_cores": 1 if host.tvm.num_cores != 1 else 2})})
    assert_only_changed(cached_compile, components("tiny-lm", cached_compile.recipe, other), "target", tmp_path)


def test_changed_calibration_data_misses(cached_compile, tmp_path):
    """Same recipe text (same file name), different bytes in the calibration file: only the calibration component changes."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(cached_compile.recipe.read_text() + "calibration: {tensors: ids.npy, num_samples: 2}\n")
    np.save(tmp_path / "ids.npy", np.arange(32, dtype=np.int64).reshape(2, 1, 16))
    first = components("tiny-lm", recipe)
    np.save(tmp_path / "ids.npy", np.arange(32, dtype=np.int64).reshape(2, 1, 16)[::-1].copy())
    second = components("tiny-lm", recipe)
    assert [k for k in first if first[k] != second[k]] == ["calibration"]
    assert CompileCache(cached_compile.cache).fetch(cache_key(second), tmp_path / "out") is None


def test_changed_versions_miss(cached_compile, tmp_path, monkeypatch):
    import slmc.cache.key

    real = slmc.cache.key.versions()
    monkeypatch.setattr(slmc.cache.key, "versions", lambda: {**real, "torch": real["torch"] + "+other"})
    assert_only_changed(cached_compile, components("tiny-lm", cached_compile.recipe), "versions", tmp_path)


def test_damaged_entry_is_removed_and_misses(cached_compile, tmp_path):
    cache_dir = tmp_path / "cache"
    shutil.copytree(cached_compile.cache, cache_dir)
    key = cached_compile.result.cache["key"]
    weights = cache_dir / "entries" / key / "artifact" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    cache = CompileCache(cache_dir)
    assert cache.fetch(key, tmp_path / "out") is None
    assert not (tmp_path / "out").exists() and cache.entries() == []


def test_cache_directory_from_flag_env_or_none(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_cache_dir(None) is None
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert resolve_cache_dir(None) == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_cache_dir(tmp_path / "flag", enabled=False) is None  # --no-cache


def test_unusable_cache_directory_is_bad_input(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot be created"):
        CompileCache(tmp_path / "file" / "cache")


def test_cache_ls_and_prune(cached_compile, tmp_path):
    from slmc.cli.main import cli

    cache_dir = tmp_path / "cache"
    shutil.copytree(cached_compile.cache, cache_dir)
    (cache_dir / "tmp" / "leftover.123.abc").mkdir()  # what a killed writer leaves
    runner = CliRunner()
    listed = runner.invoke(cli, ["cache", "ls", "--cache-dir", str(cache_dir), "--json"])
    assert listed.exit_code == 0, listed.output
    entries = json.loads(listed.stdout)["entries"]
    assert [e["key"] for e in entries] == [cached_compile.result.cache["key"]] and entries[0]["model"] == "tiny-lm"
    kept = runner.invoke(cli, ["cache", "prune", "--cache-dir", str(cache_dir), "--older-than", "1d", "--json"])
    assert kept.exit_code == 0 and json.loads(kept.stdout)["removed"] == []
    assert not any((cache_dir / "tmp").iterdir())
    old = time.time() - 3 * 86400
    os.utime(cache_dir / "entries" / entries[0]["key"] / "entry.json", (old, old))
    pruned = runner.invoke(cli, ["cache", "prune", "--cache-dir", str(cache_dir), "--older-than", "2d", "--json"])
    assert pruned.exit_code == 0 and len(json.loads(pruned.stdout)["removed"]) == 1
    assert CompileCache(cache_dir).entries() == []


def test_prune_by_size_keeps_the_recently_used(cached_compile, tmp_path):
    cache_dir = tmp_path / "cache"
    shutil.copytree(cached_compile.cache, cache_dir)
    cache = CompileCache(cache_dir)
    size = cache.entries()[0].bytes
    assert cache.prune(max_bytes=size) == [] and len(cache.entries()) == 1
    assert len(cache.prune(max_bytes=size - 1)) == 1 and cache.entries() == []


@pytest.mark.parametrize("args, message", [
    (["prune"], "needs --older-than, --max-bytes or --all"),
    (["prune", "--older-than", "soon"], "expected a duration"),
    (["prune", "--max-bytes", "lots"], "expected a size"),
])
def test_cache_command_errors_exit_2(tmp_path, args, message):
    from slmc.cli.main import cli

    result = CliRunner().invoke(cli, ["cache", *args, "--cache-dir", str(tmp_path)])
    assert result.exit_code == 2 and message in result.output


def test_cache_command_without_a_directory_exits_2(monkeypatch):
    from slmc.cli.main import cli

    monkeypatch.delenv(ENV_VAR, raising=False)
    result = CliRunner().invoke(cli, ["cache", "ls"])
    assert result.exit_code == 2 and ENV_VAR in result.output


@pytest.mark.slow
def test_two_concurrent_compiles_share_one_cache(cached_compile, tmp_path):
    """Two processes compile the same inputs at once into one (empty) cache: both succeed, the cache
    ends with one complete, verified entry, nothing half-written is left."""
    from slmc.artifact.layout import file_problems, read_manifest

    exe = shutil.which("slmc") or pytest.fail("the slmc console script is not installed (pip install -e .)")
    cache_dir = tmp_path / "cache"
    args = [exe, "compile", "-m", "tiny-lm", "-r", str(cached_compile.recipe), "--cache-dir", str(cache_dir), "--json", "-q"]
    procs = [subprocess.Popen(args + ["-o", str(tmp_path / name)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("one", "two")]
    outputs = [p.communicate(timeout=900) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-2000:]
    results = [json.loads(out) for out, _ in outputs]
    keys = {r["cache"]["key"] for r in results}
    entries = CompileCache(cache_dir).entries()
    assert len(entries) == len(keys)  # one entry per key: one (same inputs), unless slmc's sources changed in between
    artifact = entries[0].path / "artifact"
    assert file_problems(artifact, read_manifest(artifact)) == []
    assert not any((cache_dir / "tmp").iterdir())
    for name in ("weights.safetensors", "model.so"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_tuning_database_records_change_the_target_component(tmp_path, monkeypatch):
    """Records in the tuning database decide kernel schedules, so their bytes are part of the key."""
    from slmc.cache.key import tuning_digest
    from slmc.spec.target import load_target
    from slmc.backend.tuning_db import DATABASE_ENV, RECORDS, target_key

    host = load_target("host")
    monkeypatch.setenv(DATABASE_ENV, str(tmp_path))
    empty = tuning_digest(host)
    directory = tmp_path / target_key(host)
    directory.mkdir()
    (directory / RECORDS).write_text('[0, "first record"]\n')
    first = tuning_digest(host)
    (directory / RECORDS).write_text('[0, "other record"]\n')
    assert len({empty, first, tuning_digest(host)}) == 3


def _modes(root):
    return {p.relative_to(root).as_posix(): p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")]}


def test_artifacts_and_cache_entries_get_the_users_umask(cached_compile, tmp_path):
    """Every file of a compiled artifact, of its cache entry and of a cache hit has the modes of the
    user's umask (weights.safetensors and verification.safetensors were 0600, unreadable to a deploy user)."""
    umask = os.umask(0o022)
    os.umask(umask)
    for root in (cached_compile.artifact, CompileCache(cached_compile.cache).entry_path(cached_compile.result.cache["key"])):
        modes = _modes(root)
        assert {"weights.safetensors", "model.so", "manifest.json"} <= {n.rsplit("/", 1)[-1] for n in modes}, modes
        for name, mode in modes.items():
            executable = name.endswith(".so") or (root / name).is_dir()
            assert mode == (0o777 if executable else 0o666) & ~umask, (root, name, oct(mode))
    previous = os.umask(0o027)
    try:
        manifest = CompileCache(cached_compile.cache).fetch(cached_compile.result.cache["key"], tmp_path / "hit")
    finally:
        os.umask(previous)
    assert manifest is not None
    for name, mode in _modes(tmp_path / "hit").items():
        executable = name.endswith(".so") or (tmp_path / "hit" / name).is_dir()
        assert mode == (0o750 if executable else 0o640), (name, oct(mode))
