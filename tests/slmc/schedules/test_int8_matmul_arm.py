"""Int8Matmul's Arm dotprod tiles, cross-compiled for the Cortex-A76 and run under qemu through TVM RPC.

Needs the emulated arm64 board of tests/slmc/device/test_arm64.py (its cached root, built on first
use; the same Debian packages: qemu-user-static, gcc-aarch64-linux-gnu, ...). qemu emulates the
Cortex-A76, whose SDOT the kernel uses; the integer sums must equal numpy's bit for bit.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest
import tvm
from test_int8_matmul_rule import N, int_inputs, schedule, tiled, w8a8_kernel

from slmc.device import arm64
from slmc.backend.lowering import export_library
from slmc.artifact.remote_runtime import connect
from slmc.spec.target import load_target


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_dotprod_kernel_is_bit_exact_on_an_emulated_cortex_a76(tmp_path):
    arm = load_target("arm-cortex-a76")
    _, func = schedule(w8a8_kernel(), arm.compute.int8_dot, arm.tvm_target())
    lib = tvm.compile(tvm.IRModule({"main": func}), target=arm.tvm_target())
    assert "sdot\tv" in lib.mod.inspect_source("asm")
    path = tmp_path / "int8_dot.so"
    export_library(lib, arm, path)
    with arm64.start_rpc_server(arm64.prepare_root(), _free_port(), cpu="cortex-a76") as server:
        session = connect(server.url)
        session.upload(str(path))
        remote = session.load_module(path.name)
        device = session.cpu()
        for rows in (1, 3, 128):
            x, w = int_inputs(rows, rows)
            out = tvm.runtime.tensor(np.zeros((rows, N), np.float32), device)
            remote["main"](tvm.runtime.tensor(x, device), tvm.runtime.tensor(tiled(w), device),
                           tvm.runtime.tensor(np.ones(N, np.float32), device), out)
            want = x.astype(np.int64) @ w.astype(np.int64).T
            np.testing.assert_array_equal(out.numpy(), want.astype(np.float32))
