"""What serves a device URL, as far as this machine can see: an emulator here, or unknown.

``identify("rpc://HOST:PORT")`` finds the process listening on PORT when HOST is this machine
(a loopback address or one of its interfaces). If that process's executable is qemu
(``qemu-aarch64-static``, ``qemu-aarch64``, or a ``qemu-system-*`` forwarding the port), the
device is emulated, and the identity names the emulator and the CPU model of its ``-cpu``
argument (the emulated board of ``slmc device arm64 up`` is such a process). Anything else
(another machine, an ssh tunnel to a board, a process this user may not inspect) is reported as
not identified, with the reason: slmc never claims hardware it cannot see.

Precondition: Linux (psutil reads the listening sockets and their processes from /proc).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from slmc.errors import DeviceURLError

ANY_ADDRESS = {"0.0.0.0", "::"}


@dataclass(frozen=True)
class DeviceIdentity:
    """What serves ``url``: ``emulator`` (qemu's executable name) is None unless identified."""

    url: str
    emulator: str | None = None
    emulated_cpu: str | None = None
    server_pid: int | None = None
    server_program: str | None = None
    note: str = ""

    @property
    def emulated(self) -> bool | None:
        """True for a qemu process on this machine; None when slmc cannot tell."""
        return True if self.emulator else None

    def describe(self) -> str:
        """The verification sentence's subject: where and under what the artifact executed."""
        if self.emulator:
            mode = "system emulation" if self.emulator.startswith("qemu-system") else "user-mode emulation"
            return f"executed under emulation through TVM RPC at {self.url} ({self.emulator} {mode}, CPU model {self.emulated_cpu})"
        return f"executed through TVM RPC on the device at {self.url} (hardware or emulator not identified: {self.note})"

    def to_json(self) -> dict[str, Any]:
        return {"device": self.url, "emulated": self.emulated, "emulator": self.emulator, "emulated_cpu": self.emulated_cpu,
                "server_pid": self.server_pid, "server_program": self.server_program, "note": self.note}


def _local_addresses() -> set[str]:
    addresses = {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
                 if a.family in (socket.AF_INET, socket.AF_INET6)}
    return addresses


def _resolve(host: str, port: int) -> set[str]:
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except OSError:
        return set()


def _qemu_cpu(cmdline: list[str], environ: dict[str, str]) -> str:
    """qemu's ``-cpu`` argument, else ``$QEMU_CPU`` (qemu-user reads it), else qemu's default."""
    for flag, value in zip(cmdline, cmdline[1:]):
        if flag == "-cpu":
            return value
    return environ.get("QEMU_CPU") or "qemu's default"


def identify(url: str) -> DeviceIdentity:
    """Identify the server behind ``url`` (see the module docstring). Never raises for an unknown server."""
    from slmc.artifact.remote_runtime import parse_device_url

    host, port = parse_device_url(url)
    addresses = _resolve(host, port)
    if not addresses:
        raise DeviceURLError(f"device URL {url}: host '{host}' does not resolve")
    local = {a for a in addresses if ipaddress.ip_address(a.split("%")[0]).is_loopback} | (addresses & _local_addresses())
    if not local:
        return DeviceIdentity(url, note=f"{host} is another machine; slmc cannot see what runs there")
    try:
        listeners = [c for c in psutil.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                     and (c.laddr.ip in local or c.laddr.ip in ANY_ADDRESS)]
    except psutil.AccessDenied:
        return DeviceIdentity(url, note="this user may not list the machine's listening sockets")
    pids = {c.pid for c in listeners if c.pid is not None}
    if len(pids) != 1:
        why = "no process listens there that this user may inspect" if not pids else f"several processes listen there ({sorted(pids)})"
        return DeviceIdentity(url, note=f"port {port} on this machine: {why}")
    pid = pids.pop()
    try:
        process = psutil.Process(pid)
        cmdline = process.cmdline()
        program = Path(process.exe() or (cmdline[0] if cmdline else "")).name
        environ = process.environ()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess) as exc:
        return DeviceIdentity(url, server_pid=pid, note=f"the process listening on port {port} (pid {pid}) could not be inspected: {type(exc).__name__}")
    if program.startswith("qemu-"):
        return DeviceIdentity(url, emulator=program, emulated_cpu=_qemu_cpu(cmdline, environ), server_pid=pid,
                              server_program=program, note=f"pid {pid} listening on port {port} is {program}")
    return DeviceIdentity(url, server_pid=pid, server_program=program,
                          note=f"port {port} on this machine is served by '{program}' (pid {pid}), not by an emulator slmc "
                               "recognises; what is behind it (e.g. an ssh tunnel to a board) is not visible")
