"""``slmc package``: a deploy bundle that runs without Python, checked by ``slmc verify`` and by the
bundle's own ``slmc-run``.

The default model is compiled for the host once per module with the lossless built-in ``cleanup``
recipe (so eager decoding of the original model is a reference too) and packaged; the bundle's runner, run natively with an
environment of PATH only, must generate ``slmc generate``'s greedy tokens. Every file is then
corrupted in turn (one byte) and refused: by ``slmc verify`` always, and by ``slmc-run`` for every
file (the byte flipped is the file's last one, which neither the dynamic loader nor the code reads,
so the runner reaches its own check and refuses). Slow tests do the same for ``arm-cortex-a76``
under ``qemu-aarch64-static``: the dynamic flavour with only the bundle's libraries (and the cross
toolchain's sysroot), the static flavour (musl, model linked in) without any sysroot.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

import slmc
from slmc.artifact.bundle import read_bundle
from slmc.cli.main import cli
from slmc.driver.package import package_artifact

PROMPTS = ["Once upon a time", "import os\n"]
NEW_TOKENS = 24
ENV = {"PATH": "/usr/bin:/bin"}


@pytest.fixture(scope="module")
def host_artifact(tmp_path_factory):
    return slmc.compile(None, "cleanup", "host", tmp_path_factory.mktemp("package") / "default-host").artifact


@pytest.fixture(scope="module")
def host_bundle(host_artifact, tmp_path_factory):
    return package_artifact(host_artifact, tmp_path_factory.mktemp("bundles") / "host-bundle")


def slmc_generate(artifact: Path, prompt: str) -> list[int]:
    result = CliRunner().invoke(cli, ["generate", str(artifact), "-p", prompt, "-n", str(NEW_TOKENS), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["tokens"]


def eager_tokens(artifact: Path, prompt: str) -> list[int]:
    """Greedy decoding of the artifact's model in PyTorch eager (the model the manifest names)."""
    from slmc.artifact.layout import read_manifest
    from slmc.frontend.model_source import load_model
    from slmc.graph.kv_cache import eager_step, generate_greedy

    spec = load_model(read_manifest(artifact).model.name)
    spec.module.eval()
    return generate_greedy(eager_step(spec.module), spec.kv_cache, spec.tokenizer.encode(prompt), NEW_TOKENS).tokens


def until(tokens: list[int], native: list[int]) -> list[int]:
    """The reference cut to the native run's length (the runner stops after eos; Python does not)."""
    return tokens[: len(native)]


def run_bundle(bundle: Path, prompt: str, prefix: list[str] = (), timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, str(bundle / "slmc-run"), str(bundle), "--prompt", prompt, "--max-new-tokens",
                           str(NEW_TOKENS), "--json"], capture_output=True, text=True, timeout=timeout, env=ENV)


def test_the_bundle_holds_every_file_hashed_and_its_record(host_bundle, host_artifact):
    record = read_bundle(host_bundle.bundle)
    assert set(record.files) == {"model.so", "weights.safetensors", "manifest.json", "slmc-run", "libslmc_runtime.so",
                                 "libtvm_runtime.so", "libtvm_ffi.so", "tokenizer/tokenizer.json.gz"}
    assert record.architecture == "x86_64" and record.runner.zlib and not record.tokenizer_unpacked
    assert record.run.executed and record.run.mode == "native" and record.run.matches_reference is True
    assert "no timing" in record.run.summary
    assert host_bundle.archive.is_file() and host_bundle.archive.name == "host-bundle.tar.gz"
    readelf = shutil.which("readelf")
    if readelf:
        dynamic = subprocess.run([readelf, "-d", str(host_bundle.bundle / "slmc-run")], capture_output=True, text=True).stdout
        assert "[$ORIGIN]" in dynamic


@pytest.mark.parametrize("prompt", PROMPTS)
def test_the_bundles_runner_generates_slmc_generates_and_eager_tokens(host_bundle, host_artifact, prompt):
    result = run_bundle(host_bundle.bundle, prompt)
    assert result.returncode == 0, result.stderr
    native = json.loads(result.stdout)
    assert native["bundle_files_checked"] == 8
    assert native["tokens"] == until(slmc_generate(host_artifact, prompt), native["tokens"])
    assert native["tokens"] == until(eager_tokens(host_artifact, prompt), native["tokens"])


MEMORY_ALLOWANCE = 40 * 2**20  # issue 18: peak RSS <= weights file + KV cache at the context used + 40 MB


def test_the_runners_peak_memory_is_its_weights_its_kv_cache_and_at_most_40_mb_more(host_bundle):
    """A memory bound, not a timing: the bundle's runner (weights mapped in place, the KV cache's pages
    resident only for the slots written, the tokenizer's parse freed before the weights are read)."""
    from slmc.artifact.layout import read_manifest

    steps = 64
    result = subprocess.run([str(host_bundle.bundle / "slmc-run"), str(host_bundle.bundle), "--prompt", PROMPTS[0],
                             "--max-new-tokens", str(steps), "--ignore-eos", "--json"],
                            capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 0, result.stderr
    native = json.loads(result.stdout)
    cache = read_manifest(host_bundle.bundle).kv_cache
    per_slot = 2 * cache.layers * cache.kv_heads * cache.head_dim * 4
    assert native["generated_tokens"] == steps
    assert native["weights_file_bytes"] == (host_bundle.bundle / "weights.safetensors").stat().st_size
    assert native["kv_cache_bytes"] == per_slot * (native["prompt_tokens"] + steps)  # the context used, the sink slot included
    assert native["kv_cache_reserved_bytes"] == per_slot * (cache.max_context + 1)
    breakdown = native["rss_at_end_bytes"]
    assert breakdown["weights"] <= native["weights_file_bytes"] + 4096 and breakdown["total"] > 0
    assert native["peak_rss_bytes"] <= native["weights_file_bytes"] + native["kv_cache_bytes"] + MEMORY_ALLOWANCE, breakdown


def corrupt_copy(bundle: Path, name: str, out: Path) -> Path:
    copy = out / f"corrupt-{name.replace('/', '_')}"
    shutil.copytree(bundle, copy)
    path = copy / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the last byte: read by neither the dynamic loader nor the code
    path.write_bytes(bytes(data))
    return copy


@pytest.mark.parametrize("name", ["model.so", "weights.safetensors", "manifest.json", "tokenizer/tokenizer.json.gz",
                                  "libslmc_runtime.so", "libtvm_runtime.so", "libtvm_ffi.so", "slmc-run"])
def test_a_corrupted_byte_in_any_file_is_refused_by_verify_and_the_runner(host_bundle, name, tmp_path):
    copy = corrupt_copy(host_bundle.bundle, name, tmp_path)
    verify = CliRunner().invoke(cli, ["verify", str(copy), "--json"])
    assert verify.exit_code == 1
    assert f"{name}: sha256 differs from the bundle.json" in json.loads(verify.stdout)["error"]["message"]
    result = run_bundle(copy, "hi")
    assert result.returncode == 1
    assert f"{copy}/{name}: sha256 differs from bundle.json" in result.stderr
    assert json.loads(result.stdout)["ok"] is False


def test_verify_and_package_cli_exit_codes(host_bundle, host_artifact, tmp_path):
    ok = CliRunner().invoke(cli, ["verify", str(host_bundle.bundle)])
    assert ok.exit_code == 0 and "8 files match bundle.json" in ok.output
    bad = CliRunner().invoke(cli, ["package", str(tmp_path / "nowhere"), "-o", str(tmp_path / "b"), "--json"])
    assert bad.exit_code == 2
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "keep.txt").write_text("mine")
    refused = CliRunner().invoke(cli, ["package", str(host_artifact), "-o", str(tmp_path / "occupied")])
    assert refused.exit_code == 2 and "not an slmc bundle" in refused.output
    again = CliRunner().invoke(cli, ["package", str(host_artifact), "-o", str(host_bundle.bundle), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["run"]["matches_reference"] is True


def test_an_unknown_bundle_flavour_is_bad_input_before_anything_is_built(tmp_path):
    from slmc.errors import InputError

    with pytest.raises(InputError, match="flavour 'tiny' is not one of dynamic, static"):
        package_artifact(tmp_path / "nowhere", tmp_path / "bundle", flavour="tiny")
    refused = CliRunner().invoke(cli, ["package", str(tmp_path / "nowhere"), "-o", str(tmp_path / "b"), "--flavour", "tiny"])
    assert refused.exit_code == 2 and not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def a76_artifact(tmp_path_factory):
    """The default model for arm-cortex-a76 (the Raspberry Pi 5's core), lossless; for the slow tests."""
    for tool in ("aarch64-linux-gnu-g++", "qemu-aarch64-static"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} missing: apt-get install -y g++-aarch64-linux-gnu qemu-user-static")
    return slmc.compile(None, "cleanup", "arm-cortex-a76", tmp_path_factory.mktemp("package-a76") / "default-a76").artifact


def check_emulated_tokens(bundle: Path, host_artifact: Path, qemu: list[str], files: int) -> None:
    """The bundle's runner under ``qemu`` generates the host artifact's ``slmc generate`` and eager tokens."""
    for prompt in PROMPTS:
        result = run_bundle(bundle, prompt, qemu, timeout=900)
        assert result.returncode == 0, result.stderr
        native = json.loads(result.stdout)
        assert native["bundle_files_checked"] == files
        assert native["tokens"] == until(slmc_generate(host_artifact, prompt), native["tokens"])
        assert native["tokens"] == until(eager_tokens(host_artifact, prompt), native["tokens"])


@pytest.mark.slow
def test_the_aarch64_bundle_runs_under_qemu_with_only_its_own_libraries(host_artifact, a76_artifact, tmp_path):
    """Cross-built runner of the bundle, executed under user-mode emulation; tokens only, no timing."""
    packaged = package_artifact(a76_artifact, tmp_path / "a76-bundle")
    record = packaged.record
    assert record.flavour == "dynamic"
    assert record.architecture == "aarch64" and record.runner.target_triple == "aarch64-linux-gnu"
    assert record.tokenizer_unpacked and "tokenizer/tokenizer.json" in record.files  # the cross build has no zlib
    assert record.run.executed and record.run.mode == "emulated" and "qemu-aarch64-static" in record.run.emulator
    assert record.run.summary.startswith("executed natively-compiled aarch64 runner under emulation")
    assert "no timing" in record.run.summary and record.run.matches_reference is None
    check_emulated_tokens(packaged.bundle, host_artifact, ["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu"], 8)
    broken = corrupt_copy(packaged.bundle, "libtvm_runtime.so", tmp_path)
    result = run_bundle(broken, "hi", ["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu"], timeout=900)
    assert result.returncode == 1 and "libtvm_runtime.so: sha256 differs from bundle.json" in result.stderr


STATIC_FILES = ["slmc-run", "weights.safetensors", "manifest.json", "tokenizer/tokenizer.json"]


@pytest.mark.slow
def test_the_static_aarch64_bundle_runs_under_qemu_without_a_sysroot(host_artifact, a76_artifact, tmp_path):
    """The static (musl) flavour for Android: one static slmc-run with the model linked in, emulated with
    nothing but the bundle (no -L); tokens only, no timing. Every file corrupted in turn is refused."""
    packaged = package_artifact(a76_artifact, tmp_path / "a76-static", flavour="static")
    record = packaged.record
    assert record.flavour == "static" and sorted(record.files) == sorted(STATIC_FILES)
    assert record.architecture == "aarch64" and record.runner.target_triple == "aarch64-linux-musl"
    assert record.run.executed and record.run.mode == "emulated" and "without a sysroot" in record.run.emulator
    assert record.run.summary.startswith("executed natively-compiled aarch64 runner under emulation")
    assert "no timing" in record.run.summary
    readelf = shutil.which("readelf")
    if readelf:
        headers = subprocess.run([readelf, "-lh", str(packaged.bundle / "slmc-run")], capture_output=True, text=True).stdout
        assert "AArch64" in headers and "INTERP" not in headers and "DYNAMIC" not in headers  # static: no loader, no libc
    check_emulated_tokens(packaged.bundle, host_artifact, ["qemu-aarch64-static"], len(STATIC_FILES))
    for name in STATIC_FILES:
        broken = corrupt_copy(packaged.bundle, name, tmp_path)
        result = run_bundle(broken, "hi", ["qemu-aarch64-static"], timeout=900)
        assert result.returncode == 1, (name, result.stderr)
        assert f"{broken}/{name}: sha256 differs from bundle.json" in result.stderr
