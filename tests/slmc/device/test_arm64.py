"""The emulated arm64 board: aarch64 artifacts are verified under qemu through TVM RPC against eager.

The slow tests need root, network access to a Debian mirror and the Debian packages
``debootstrap``, ``qemu-user-static``, ``debian-archive-keyring`` and ``gcc-aarch64-linux-gnu``
(the README's test command installs them); a missing one fails with the apt command that
installs it. ``test_a_root_is_built_from_scratch`` always builds a new root in a temporary
directory (what a fresh machine does); the other slow tests share the cached root
(``~/.cache/slmc/arm64-root`` or ``$SLMC_ARM64_ROOT``), building it first if it is absent.
Times are in docs/devices.md.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import tvm
from click.testing import CliRunner

import slmc
from slmc.cli.device import device_group
from slmc.device import arm64
from slmc.errors import DeviceConnectionError, DeviceSetupError, DeviceURLError, InputError, ToolchainError
from slmc.graph.ir import trace
from slmc.frontend.model_source import load_model
from slmc.models import DEFAULT_MODEL, tiny_lm
from slmc.artifact.manifest import Verification
from slmc.artifact.remote_runtime import RemoteModel, connect
from slmc.verify.numerics import generated_samples

EXAMPLE_RECIPES = Path(__file__).resolve().parents[3] / "examples" / "recipes"
NOT_NATIVE = "not natively: code is for aarch64, this machine is x86_64"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _slmc(*args: str, cwd, timeout: float = 900) -> subprocess.CompletedProcess:
    exe = shutil.which("slmc") or pytest.fail("the slmc console script is not installed (pip install -e .)")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_arm_artifact(tmp_path_factory):
    """tiny-lm cross-compiled for the Cortex-A76 without a device (not executed: the manifest says why)."""
    return slmc.compile("tiny-lm", target="arm-cortex-a76", out=tmp_path_factory.mktemp("arm") / "tiny").artifact


@pytest.fixture(scope="module")
def arm64_server():
    """TVM's RPC server in the (cached) arm64 root, qemu emulating the target's CPU."""
    root = arm64.prepare_root()
    server = arm64.start_rpc_server(root, _free_port(), cpu="cortex-a76")
    yield server
    server.stop()
    assert not server.is_running()


def _check_emulated_record(v: dict, url: str, samples: int = 4) -> None:
    """The manifest says exactly how the artifact was verified: under qemu, through RPC, at ``url``."""
    assert v["executed"] and v["passed"] and v["samples"] == samples and v["device"] == url
    assert v["how"].startswith(f"executed under emulation through TVM RPC at {url} (qemu-aarch64-static user-mode "
                               f"emulation, CPU model cortex-a76) on {samples} samples ({NOT_NATIVE}); compared with eager torch; "
                               "greedy decode of 16 tokens through the KV cache compared step by step")
    e = v["execution"]
    assert e["where"] == "rpc" and e["device"] == url and e["emulated"] is True
    assert e["emulator"] == "qemu-aarch64-static" and e["emulated_cpu"] == "cortex-a76" and e["server_pid"] > 0
    assert v["artifact_vs_eager"]["within_tolerance"] and v["artifact_vs_eager"]["elements_out_of_tolerance"] == 0
    assert v["decode"]["within_tolerance"] and v["decode"]["same_tokens"] and v["decode"]["steps"] == 16


def _max_abs_error_vs_eager(url: str, artifact, spec) -> float:
    """An independent check: the artifact run through RemoteModel against the eager torch module."""
    sample = generated_samples(trace(spec), 1, seed=0)[0]
    with RemoteModel(url, artifact) as model:
        actual = model.run_numpy(*[t.numpy() for t in sample])
    with torch.no_grad():
        expected = spec.module(*sample)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(actual) == len(expected)
    errors = []
    for got, want in zip(actual, expected, strict=True):
        assert got.shape == tuple(want.shape) and got.dtype == want.numpy().dtype
        errors.append(float(np.max(np.abs(got - want.numpy()))))
    return max(errors)


# --- building the board ---------------------------------------------------------------------------

@pytest.mark.slow
def test_a_root_is_built_from_scratch(tmp_path):
    """What a fresh machine does: debootstrap, unpack, the aarch64 wheels, a smoke test; then it serves."""
    root = tmp_path / "arm64-root"
    messages: list[str] = []
    start = time.perf_counter()
    try:
        assert arm64.prepare_root(root, progress=messages.append) == root.resolve()
        built = time.perf_counter() - start
        marker = arm64.read_marker(root)
        assert arm64.is_prepared(root) and 0 < marker["build_seconds"] <= built + 0.1  # recorded rounded to 0.1 s
        assert marker["found"]["machine"] == "aarch64" and marker["found"]["python"].startswith("3.11.")
        assert marker["found"]["tvm"] == tvm.__version__  # RPC client and server must match
        assert any("debootstrap --foreign" in m for m in messages) and messages[-1].startswith("arm64 root ready")
        assert not list(tmp_path.glob(".arm64-root.building*"))  # the staging directory was renamed into place
        probe = subprocess.run([str(root / arm64.WRAPPER), "-c", "import platform; print(platform.machine())"],
                               capture_output=True, text=True, timeout=300)
        assert probe.stdout.strip() == "aarch64", probe.stderr
        with arm64.start_rpc_server(root, _free_port(), cpu="cortex-a76") as server:
            connect(server.url)  # a TVM RPC handshake with the server inside the new root
        again = time.perf_counter()
        assert arm64.prepare_root(root) == root.resolve() and time.perf_counter() - again < 2.0
        print(f"fresh arm64 root built in {built:.1f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)  # ~600 MB


@pytest.mark.slow
def test_cli_up_status_down(tmp_path):
    """``slmc device arm64 up --background`` / ``status --json`` / ``down``, through the console script."""
    port = _free_port()
    url = f"rpc://127.0.0.1:{port}"
    up = _slmc("device", "arm64", "up", "--background", "--port", str(port), "--cpu", "cortex-a76", cwd=tmp_path)
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.strip() == url
        status = _slmc("device", "arm64", "status", "--json", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        data = json.loads(status.stdout)
        assert data["prepared"] and data["found"]["machine"] == "aarch64"
        (server,) = [s for s in data["servers"] if s["url"] == url]
        assert server["answers_rpc"] and server["cpu"] == "cortex-a76"
        again = _slmc("device", "arm64", "up", "--background", "--port", str(port), cwd=tmp_path)
        assert again.returncode == 0 and again.stdout.strip() == url and "already running" in again.stderr
    finally:
        down = _slmc("device", "arm64", "down", "--port", str(port), cwd=tmp_path)
    assert down.returncode == 0 and f"stopped {url}" in down.stdout
    after = json.loads(_slmc("device", "arm64", "status", "--json", cwd=tmp_path).stdout)
    assert url not in [s["url"] for s in after["servers"]]
    with pytest.raises(DeviceConnectionError, match=url):
        connect(url, timeout=5.0)


# --- verification through RPC ---------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_lm_is_verified_through_rpc_under_emulation(arm64_server, tmp_path):
    result = slmc.compile("tiny-lm", target="arm-cortex-a76", out=tmp_path / "arm", device=arm64_server.url)
    v = result.verification.model_dump(mode="json")
    _check_emulated_record(v, arm64_server.url)
    assert v["artifact_vs_eager"]["max_abs_error"] <= 1e-4  # the default recipe's atol; measured: 1.1e-6
    assert json.loads((result.artifact / "manifest.json").read_text())["verification"] == v
    print(f"tiny-lm: max abs error {v['artifact_vs_eager']['max_abs_error']:.3g}, decode {v['decode']['max_abs_error']:.3g}")


@pytest.mark.slow
def test_default_model_is_verified_through_rpc_from_the_cli(arm64_server, tmp_path):
    """The acceptance path: ``slmc compile -t arm-cortex-a76 --device rpc://...`` on the built-in fixture-lm (lossless, so the untouched eager module is the reference)."""
    result = _slmc("compile", "-t", "arm-cortex-a76", "-r", "cleanup", "--device", arm64_server.url, "-o", "arm", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] and data["model"]["name"] == DEFAULT_MODEL
    v = data["verification"]
    _check_emulated_record(v, arm64_server.url)
    assert v["artifact_vs_eager"]["max_abs_error"] <= 1e-4  # measured: 1.9e-5
    assert json.loads((tmp_path / "arm" / "manifest.json").read_text())["verification"] == v
    error = _max_abs_error_vs_eager(arm64_server.url, tmp_path / "arm", load_model(DEFAULT_MODEL))
    assert error <= 1e-4  # against the untouched eager module, outside slmc.compile; measured: 1.7e-5
    print(f"fixture-lm: max abs error {v['artifact_vs_eager']['max_abs_error']:.3g}, decode "
          f"{v['decode']['max_abs_error']:.3g}, independent {error:.3g}")


@pytest.mark.slow
def test_int8_fixture_lm_is_verified_through_rpc_under_emulation(arm64_server, tmp_path):
    """Issue 6's acceptance: the fixture LM with an int8 recipe, aarch64, run under emulation through RPC."""
    recipe = EXAMPLE_RECIPES / "int8-rtn.yaml"
    result = _slmc("compile", "-t", "arm-cortex-a76", "-r", str(recipe), "--device", arm64_server.url, "-o", "arm8",
                   "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    data = json.loads(result.stdout)
    v = data["verification"]
    _check_emulated_record(v, arm64_server.url)
    assert v["artifact_vs_eager"]["max_abs_error"] <= 1e-4  # against the int8 graph run eagerly; measured: 1.9e-5
    manifest = json.loads((tmp_path / "arm8" / "manifest.json").read_text())
    layers = manifest["passes"][0]["stats"]["layers"]
    assert layers and all(layer["format"].startswith("int8") for layer in layers)
    print(f"fixture-lm int8: max abs error {v['artifact_vs_eager']['max_abs_error']:.3g}, decode {v['decode']['max_abs_error']:.3g}")


@pytest.mark.slow
def test_remote_model_checks_inputs_like_the_native_runtime(arm64_server, tiny_arm_artifact):
    with RemoteModel(arm64_server.url, tiny_arm_artifact) as model:
        with pytest.raises(InputError, match="takes 3 inputs"):
            model.run_numpy(np.zeros((1, 4), dtype=np.int64))
        with pytest.raises(InputError, match="must be int64"):
            model.run_numpy(np.zeros((1, 4), dtype=np.int32), *[np.zeros((2, 1, 4, 1, 32), np.float32)] * 2)
        with pytest.raises(InputError, match="token ids must lie in"):
            model.run_numpy(np.full((1, 4), 300, dtype=np.int64), *[np.zeros((2, 1, 4, 1, 32), np.float32)] * 2)
        logits, keys, _ = model.step(np.array([[1, 2, 3]], dtype=np.int64), *[np.zeros((2, 1, 4, 1, 32), np.float32)] * 2)
        assert logits.shape == (1, 3, 256) and keys.shape == (2, 1, 4, 4, 32)
    assert _max_abs_error_vs_eager(arm64_server.url, tiny_arm_artifact, tiny_lm.build()) <= 1e-4  # measured: 7.2e-7


@pytest.mark.slow
def test_verify_and_generate_run_an_arm64_artifact_on_the_board(arm64_server, tiny_arm_artifact, tmp_path):
    """Issue 16: ``slmc verify/generate --device`` run an aarch64 artifact compiled without a device on the board."""
    url = arm64_server.url
    result = _slmc("verify", str(tiny_arm_artifact), "--device", url, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["outputs_rechecked"] and report["where"] == url and report["artifact_vs_recorded"]["within_tolerance"]
    there = _slmc("generate", str(tiny_arm_artifact), "--prompt", "def ", "--max-new-tokens", "4", "--device", url, "--json", cwd=tmp_path)
    assert there.returncode == 0, there.stderr
    assert len(json.loads(there.stdout)["tokens"]) == 4


@pytest.mark.slow
def test_second_prepare_is_fast_and_a_busy_port_is_refused(arm64_server):
    start = time.perf_counter()
    assert arm64.prepare_root() == arm64_server.root
    assert time.perf_counter() - start < 2.0
    with pytest.raises(DeviceSetupError, match=f"port {arm64_server.port} .* already in use"):
        arm64.start_rpc_server(arm64_server.root, arm64_server.port)


# --- what the manifest says without a device, and errors ------------------------------------------

def test_without_a_device_the_manifest_says_not_executed_and_why(tiny_arm_artifact):
    v = Verification.model_validate(json.loads((tiny_arm_artifact / "manifest.json").read_text())["verification"])
    reason = ("not executed: code is for aarch64, this machine is x86_64; "
              "no device given (device rpc://HOST:PORT runs it through TVM RPC: docs/devices.md)")
    assert not v.executed and v.reason == reason and v.artifact_vs_eager is None and v.decode is None
    assert [(c.check, c.reason) for c in v.not_executed] == [("artifact_vs_eager", reason), ("decode", reason)]
    assert all(g.where == "host" and g.passed for g in v.gates)  # the default recipe's gates, if any: measured here
    assert v.compressed_vs_original is not None and v.recheck is not None and v.passed


def test_a_device_is_not_used_for_a_target_that_runs_here(tmp_path):
    url = f"rpc://127.0.0.1:{_free_port()}"  # nothing listens: it must not even be contacted
    v = slmc.compile("tiny-lm", target="host", out=tmp_path / "host", device=url).verification.model_dump(mode="json")
    assert v["executed"] and v["passed"] and v["device"] is None
    assert v["execution"] == {"where": "native", "device": None, "unused_device": url}
    assert v["how"].startswith("executed natively through slmc.load on 4 samples") and f"device {url} not used" in v["how"]


def test_compile_with_an_unreachable_device_fails_before_the_build(tmp_path):
    url = f"rpc://127.0.0.1:{_free_port()}"
    start = time.perf_counter()
    with pytest.raises(DeviceConnectionError, match=f"no TVM RPC server answers at {url}") as info:
        slmc.compile("tiny-lm", target="arm-cortex-a76", out=tmp_path / "arm", device=url)
    assert time.perf_counter() - start < 5.0 and not (tmp_path / "arm").exists()
    assert info.value.exit_code == 1 and info.value.url == url


def test_cli_unreachable_device_exits_1_naming_the_address(tmp_path):
    url = f"rpc://127.0.0.1:{_free_port()}"
    result = _slmc("compile", "-m", "tiny-lm", "-t", "arm-cortex-a76", "--device", url, "-o", "arm", "--json", cwd=tmp_path)
    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "DeviceConnectionError" and error["url"] == url and url in error["message"]
    assert f"error: no TVM RPC server answers at {url}" in result.stderr
    assert not (tmp_path / "arm").exists()


def test_cli_malformed_device_url_exits_2(tmp_path):
    result = _slmc("compile", "-m", "tiny-lm", "-t", "arm-cortex-a76", "--device", "127.0.0.1:9090", cwd=tmp_path)
    assert result.returncode == 2 and "is not of the form rpc://HOST:PORT" in result.stderr
    assert not (tmp_path / "slmc-out").exists()


def test_no_server_at_the_url_is_a_typed_error_quickly(tiny_arm_artifact):
    url = f"rpc://127.0.0.1:{_free_port()}"
    start = time.perf_counter()
    with pytest.raises(DeviceConnectionError, match=f"no TVM RPC server answers at {url}") as info:
        RemoteModel(url, tiny_arm_artifact)
    assert time.perf_counter() - start < 5.0
    assert info.value.url == url and info.value.to_json()["url"] == url


def test_a_server_that_never_answers_times_out():
    """A TCP listener that never speaks TVM's handshake (or a TVM server busy with another client)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"rpc://127.0.0.1:{listener.getsockname()[1]}"
        start = time.perf_counter()
        with pytest.raises(DeviceConnectionError, match="did not complete TVM's RPC handshake within 1 s"):
            connect(url, timeout=1.0)
        assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize("url", ["127.0.0.1:9090", "http://127.0.0.1:9090", "rpc://127.0.0.1", "rpc://host:0", "rpc://host:99999"])
def test_malformed_device_urls_are_input_errors(url):
    with pytest.raises(DeviceURLError, match="rpc://HOST:PORT"):
        connect(url)
    assert DeviceURLError.exit_code == 2


@pytest.mark.parametrize(("tool", "package"), [("debootstrap", "debootstrap"), ("qemu-aarch64-static", "qemu-user-static")])
def test_a_missing_host_package_is_a_typed_error_naming_the_apt_command(monkeypatch, tmp_path, tool, package):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == tool else f"/usr/bin/{name}")
    with pytest.raises(DeviceSetupError, match=f"needs '{tool}'.*apt-get install {package}") as info:
        arm64.prepare_root(tmp_path / "root")
    assert isinstance(info.value, ToolchainError) and info.value.exit_code == 1
    assert not (tmp_path / "root").exists()


def test_building_needs_root(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(DeviceSetupError, match="needs root"):
        arm64.prepare_root(tmp_path / "root")
    assert not (tmp_path / "root").exists()


def test_a_foreign_directory_is_not_taken_over(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "notes.txt").write_text("precious")
    with pytest.raises(DeviceSetupError, match="is not an slmc arm64 root"):
        arm64.prepare_root(root)
    assert (root / "notes.txt").read_text() == "precious"


def test_an_unprepared_root_cannot_serve(tmp_path):
    with pytest.raises(DeviceSetupError, match="not a prepared arm64 root"):
        arm64.start_rpc_server(tmp_path / "nothing-here", _free_port())


def test_cli_status_and_down_without_a_root(tmp_path):
    runner = CliRunner()
    status = runner.invoke(device_group, ["arm64", "status", "--root", str(tmp_path / "none")])
    assert status.exit_code == 0 and "not prepared" in status.output and "none running" in status.output
    down = runner.invoke(device_group, ["arm64", "down", "--root", str(tmp_path / "none")])
    assert down.exit_code == 0
