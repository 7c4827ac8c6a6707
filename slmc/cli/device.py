"""``slmc device``: devices that run artifacts this machine cannot (docs/devices.md).

``slmc device arm64 up [--port 9090] [--background] [--cpu MODEL]`` builds the emulated arm64
board once and starts TVM's RPC server in it on 127.0.0.1, printing its ``rpc://`` URL on stdout
(progress goes to stderr); ``down`` stops it; ``status`` shows the root and the running servers.
Registered by slmc/cli/main.py (``cli.add_command(device_group)``).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from slmc.cli.output import handles_errors


def _say(message: str) -> None:
    click.echo(message, err=True)


root_option = click.option(
    "--root", type=click.Path(path_type=Path), default=None,
    help="Directory of the arm64 root [default: $SLMC_ARM64_ROOT, else ~/.cache/slmc/arm64-root].",
)


@click.group("device")
def device_group() -> None:
    """Devices that run artifacts this machine cannot, reached through TVM RPC (compile --device rpc://HOST:PORT)."""


@device_group.group("arm64")
def arm64_group() -> None:
    """An emulated arm64 board: a Debian arm64 root under qemu-user running TVM's RPC server on 127.0.0.1."""


@arm64_group.command("up")
@click.option("--port", default=9090, show_default=True, type=click.IntRange(1, 65534), help="Port on 127.0.0.1.")
@click.option("--background", is_flag=True, help="Return once the server is up; stop it with 'slmc device arm64 down'.")
@click.option("--cpu", default="max", show_default=True,
              help="qemu CPU model the board emulates: max, cortex-a76, cortex-a72, cortex-a53, neoverse-n1, a64fx, ...")
@root_option
@handles_errors
def up_command(port: int, background: bool, cpu: str, root: Path | None) -> None:
    """Prepare the arm64 root (once, a few minutes) and serve TVM RPC in it; print the rpc:// URL."""
    from slmc.device import arm64

    prepared = arm64.prepare_root(root, progress=_say)
    for server in arm64.recorded_servers(prepared):
        if server.port == port:
            _say(f"already running: pid {server.pid}, qemu cpu {server.cpu}, log {server.log_path}")
            click.echo(server.url)
            return
    server = arm64.start_rpc_server(prepared, port, cpu=cpu)
    server.record()
    if background:
        _say(f"TVM RPC server running in the background: pid {server.pid}, qemu cpu {cpu}, log {server.log_path}; "
             "stop it with 'slmc device arm64 down'")
        click.echo(server.url)
        return
    click.echo(server.url)
    _say(f"serving (qemu cpu {cpu}, log {server.log_path}); Ctrl-C stops the server")
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        _say("stopped")


@arm64_group.command("down")
@click.option("--port", default=None, type=int, help="Stop only the server on this port [default: every one].")
@root_option
@handles_errors
def down_command(port: int | None, root: Path | None) -> None:
    """Stop the arm64 RPC servers started by 'slmc device arm64 up'."""
    from slmc.device import arm64

    servers = [s for s in arm64.recorded_servers(root) if port is None or s.port == port]
    if not servers:
        _say("no arm64 RPC server is running" + (f" on port {port}" if port is not None else ""))
    for server in servers:
        server.stop()
        click.echo(f"stopped {server.url} (pid {server.pid})")


STATUS_TIMEOUT = 10.0


def _answers_rpc(url: str) -> bool:
    """A TVM RPC handshake succeeds (a bare TCP accept proves little: TVM's accept loop can die)."""
    from slmc.artifact.remote_runtime import DeviceError, connect

    try:
        connect(url, timeout=STATUS_TIMEOUT)
    except DeviceError:
        return False
    return True


@arm64_group.command("status")
@root_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@handles_errors
def status_command(root: Path | None, as_json: bool) -> None:
    """Show whether the arm64 root is prepared and which RPC servers run in it."""
    from slmc.device import arm64

    path = (root.expanduser() if root is not None else arm64.default_root()).resolve()
    marker = arm64.read_marker(path) or {}
    servers = arm64.recorded_servers(path)
    data = {
        "root": str(path),
        "prepared": arm64.is_prepared(path),
        "built_at": marker.get("built_at"),
        "found": marker.get("found"),
        "servers": [{"url": s.url, "pid": s.pid, "cpu": s.cpu, "log": str(s.log_path), "answers_rpc": _answers_rpc(s.url)}
                    for s in servers],
    }
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    if data["prepared"]:
        found = data["found"] or {}
        click.echo(f"root: {path} (prepared {data['built_at']}: Python {found.get('python')}, TVM {found.get('tvm')})")
    elif marker:
        click.echo(f"root: {path} (built for another slmc or TVM version: 'slmc device arm64 up' rebuilds it)")
    else:
        click.echo(f"root: {path} (not prepared: 'slmc device arm64 up' builds it)")
    for s in data["servers"]:
        state = ("answers TVM RPC" if s["answers_rpc"] else
                 f"running but does NOT answer TVM RPC within {STATUS_TIMEOUT:g} s (busy with another client, or its accept "
                 "loop died after a failed session: see the log; 'down' then 'up' restarts it)")
        click.echo(f"server: {s['url']} {state} (pid {s['pid']}, qemu cpu {s['cpu']}, log {s['log']})")
    if not servers:
        click.echo("server: none running")
