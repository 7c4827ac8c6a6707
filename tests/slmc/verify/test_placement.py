"""Where verification executes an artifact (slmc/verify/placement.py): natively, on a device, or not, and why."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from slmc.errors import DeviceConnectionError, DeviceURLError
from slmc.artifact.manifest import NativeExecution, Verification
from slmc.verify.placement import Execution, check_device, decide
from slmc.spec.recipe import load_recipe
from slmc.spec.target import TargetDescriptor, load_target

URL = "rpc://127.0.0.1:9090"


@pytest.fixture(scope="module")
def recipe():
    return load_recipe(None)


@pytest.fixture(scope="module")
def opencl_target():
    data = load_target("arm-cortex-a76").model_dump(mode="json")
    data.update(name="opencl-test", kind="gpu", tvm={"kind": "opencl", "host": {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}})
    return TargetDescriptor.model_validate(data)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_target_that_runs_here_runs_natively_and_a_device_is_not_used(recipe):
    skipped, execution = decide(recipe, load_target("host"), URL)
    assert skipped is None and execution.device is None and execution.unused_device == URL
    assert execution.how(4).startswith("executed natively through slmc.load on 4 samples (x86_64 code")
    assert execution.how(4).endswith(f"; device {URL} not used: the target runs here)")
    assert execution.record() == NativeExecution(where="native", unused_device=URL)


def test_a_foreign_cpu_target_runs_on_the_device(recipe):
    skipped, execution = decide(recipe, load_target("arm-cortex-a76"), URL)
    assert skipped is None and execution == Execution("code is for aarch64, this machine is x86_64", device=URL)


def test_a_foreign_target_without_a_device_is_not_executed_and_says_why(recipe):
    """Verification is not skipped: the gates still run on the host; only the artifact does not run."""
    skipped, execution = decide(recipe, load_target("arm-cortex-a76"), None)
    assert skipped is None and not execution.runs and execution.device is None
    assert execution.not_run.startswith("not executed: code is for aarch64, this machine is x86_64; no device given")
    with pytest.raises(ValueError, match="not executed"):
        with execution.open(Path("unused")):
            pass


def test_a_gpu_target_is_not_run_through_rpc(recipe, opencl_target):
    skipped, execution = decide(recipe, opencl_target, URL)
    assert skipped is None and not execution.runs
    assert execution.not_run == (f"not executed: tvm kind 'opencl' has no runtime on this machine; device {URL} not used: "
                                 "TVM RPC verification runs CPU (llvm) artifacts only")
    check_device(recipe, opencl_target, f"rpc://127.0.0.1:{_closed_port()}")  # not contacted: it would not be used


def test_disabled_verification_does_not_use_the_device(tmp_path):
    path = tmp_path / "off.yaml"
    path.write_text("verify:\n  enabled: false\n")
    off = load_recipe(path)
    skipped, execution = decide(off, load_target("arm-cortex-a76"), URL)
    assert execution is None and skipped == Verification.skipped(
        f"disabled by the recipe (verify.enabled: false); device {URL} not used")
    check_device(off, load_target("arm-cortex-a76"), f"rpc://127.0.0.1:{_closed_port()}")


def test_check_device_rejects_a_malformed_url_and_an_unreachable_device(recipe):
    with pytest.raises(DeviceURLError, match="rpc://HOST:PORT"):
        check_device(recipe, load_target("host"), "tcp://127.0.0.1:9090")  # checked even when it would not be used
    url = f"rpc://127.0.0.1:{_closed_port()}"
    with pytest.raises(DeviceConnectionError, match=f"no TVM RPC server answers at {url}"):
        check_device(recipe, load_target("arm-cortex-a76"), url)
    check_device(recipe, load_target("arm-cortex-a76"), None)
