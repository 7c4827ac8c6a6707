"""What serves a device URL (slmc/artifact/device_identity.py). The emulated board itself is identified in
test_arm64.py (a real qemu process); here: servers that are not emulators, and other machines."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from slmc.artifact.device_identity import identify
from slmc.errors import DeviceURLError


def test_a_local_server_that_is_not_an_emulator_is_not_called_one():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"rpc://127.0.0.1:{listener.getsockname()[1]}"
        identity = identify(url)
    program = Path(sys.executable).resolve().name
    assert identity.emulated is None and identity.emulator is None and identity.server_program == program
    assert f"served by '{program}'" in identity.note
    assert identity.describe() == f"executed through TVM RPC on the device at {url} (hardware or emulator not identified: {identity.note})"
    assert identity.to_json()["emulated"] is None and identity.to_json()["device"] == url


def test_another_machine_is_not_identified():
    identity = identify("rpc://192.0.2.10:9090")  # TEST-NET-1: never a local address
    assert identity.emulated is None and identity.server_pid is None
    assert identity.note == "192.0.2.10 is another machine; slmc cannot see what runs there"


def test_nothing_listening_locally_is_said_so():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    identity = identify(f"rpc://localhost:{port}")
    assert identity.emulated is None and f"port {port} on this machine: no process listens there" in identity.note


def test_an_unresolvable_host_is_a_url_error():
    with pytest.raises(DeviceURLError, match="does not resolve"):
        identify("rpc://no-such-host.invalid:9090")
