"""An emulated arm64 board: a Debian arm64 root run under qemu-user, serving TVM RPC on 127.0.0.1.

``prepare_root(root)`` builds the root once (a marker file records a completed build, so later
calls return at once); ``start_rpc_server(root, port)`` runs ``python -m tvm.exec.rpc_server``
inside it and returns an ``RpcServer`` handle that stops it. Artifacts are then run through
``slmc.artifact.remote_runtime.RemoteModel("rpc://127.0.0.1:PORT", artifact)``, exactly as on a real board.

How the root is built, and why this way (docs/devices.md has the user's view):

- ``debootstrap --foreign --arch=arm64 --variant=minbase --include=python3.11,...`` resolves and
  downloads the Debian packages and unpacks the essential ones. It runs no arm64 code.
- debootstrap's second stage (dpkg configuring the packages in a chroot) would need the kernel to
  exec arm64 binaries: binfmt_misc mounted and a qemu handler registered. That is global kernel
  state, needs CAP_SYS_ADMIN (absent in unprivileged CI containers) and is off on a fresh machine,
  so slmc skips it and unpacks the remaining packages with ``dpkg-deb`` instead. No maintainer
  script runs; the root is a file tree for running Python, not a bootable system.
- The aarch64 wheels of TVM and tvm-ffi (the versions installed on this host, so that RPC client
  and server match), numpy, cloudpickle and psutil (TVM's RPC server uses both) are installed by
  the host's pip with ``--platform manylinux_*_aarch64 --only-binary=:all: --target``: nothing is
  downloaded from inside the emulation.
- Everything runs as ``qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.11``, started through the
  wrapper ``ROOT/usr/bin/slmc-python3.11`` (a host shell script). qemu's ``-0`` makes the wrapper
  the guest's ``argv[0]``, hence its ``sys.executable``, so the subprocesses TVM's server starts
  (``sys.executable -m tvm.exec.popen_worker``) go through qemu too, without binfmt_misc.

Building needs root (debootstrap creates device nodes) and the Debian packages ``debootstrap``,
``qemu-user-static`` and ``debian-archive-keyring``; running a prepared root needs only qemu.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmc.errors import DeviceSetupError

ROOT_ENV = "SLMC_ARM64_ROOT"
MIRROR_ENV = "SLMC_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"  # Debian 12: Python 3.11 (slmc's version) and glibc 2.36 (>= the wheels' manylinux_2_28)
DEBIAN_PACKAGES = ["python3.11", "libstdc++6", "libgcc-s1", "zlib1g"]
EXTRA_WHEELS = ["numpy>=1.26,<3", "cloudpickle>=3.0", "psutil>=5.9"]
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
MARKER = ".slmc-arm64-root.json"
ROOT_FORMAT = 1
WRAPPER = "usr/bin/slmc-python3.11"
SITE_PACKAGES = "usr/local/lib/python3.11/dist-packages"
STATE_DIR = "var/lib/slmc"
LOG_DIR = "var/log"
LOOPBACK = "127.0.0.1"

# host tool -> the Debian/Ubuntu package that provides it
HOST_PACKAGES = {
    "debootstrap": "debootstrap",
    "qemu-aarch64-static": "qemu-user-static",
    "dpkg-deb": "dpkg",
    "tar": "tar",
}

Progress = Callable[[str], None]


def default_root() -> Path:
    """``$SLMC_ARM64_ROOT``, else ``~/.cache/slmc/arm64-root``."""
    configured = os.environ.get(ROOT_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "slmc" / "arm64-root"


def _require_tool(name: str, why: str) -> str:
    path = shutil.which(name)
    if path is None:
        package = HOST_PACKAGES[name]
        raise DeviceSetupError(
            f"{why} needs '{name}', which is not installed; on Debian/Ubuntu: "
            f"apt-get update && apt-get install {package}"
        )
    return path


def wheel_requirements() -> list[str]:
    """The wheels the root gets: this host's TVM and tvm-ffi versions, exactly, and TVM's helpers."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in ("apache-tvm", "apache-tvm-ffi"):
        try:
            pins.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            raise DeviceSetupError(f"'{dist}' is not installed on this host, so slmc cannot tell which version the board needs") from None
    return pins + EXTRA_WHEELS


def _spec() -> dict[str, Any]:
    """What identifies a root; a marker recording another spec means the root is rebuilt."""
    return {"format": ROOT_FORMAT, "arch": "arm64", "suite": SUITE, "debian_packages": DEBIAN_PACKAGES,
            "wheels": wheel_requirements()}


def read_marker(root: Path) -> dict[str, Any] | None:
    """The marker of a completed root, or None (no root, an unfinished one, or unreadable)."""
    try:
        data = json.loads((Path(root) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_prepared(root: Path) -> bool:
    """Whether ``root`` is a completed root for this slmc and this host's TVM."""
    marker = read_marker(root)
    return marker is not None and marker.get("spec") == _spec()


@contextlib.contextmanager
def _locked(root: Path, progress: Progress) -> Iterator[None]:
    """One builder per root at a time (another process may be building the same one)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another process that is building {root}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("  " + line for line in text.strip().splitlines()[-lines:])


def _run_logged(cmd: list[str], log: Path, what: str, timeout: float, **kwargs: Any) -> None:
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n$ {shlex.join(cmd)}\n")
        out.flush()
        try:
            result = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, **kwargs)
        except subprocess.TimeoutExpired:
            raise DeviceSetupError(f"{what} did not finish within {timeout:.0f} s; log: {log}\n{_tail(log)}") from None
    if result.returncode != 0:
        raise DeviceSetupError(f"{what} failed (exit status {result.returncode}); last lines of {log}:\n{_tail(log)}")


def _unpack_packages(stage: Path, log: Path) -> int:
    """Unpack the packages debootstrap downloaded but left for its second stage, without running
    their maintainer scripts. ``--keep-directory-symlink`` keeps merged-/usr links (/lib -> usr/lib)."""
    base = (stage / "debootstrap" / "base").read_text(encoding="utf-8").split()
    debpaths = (stage / "debootstrap" / "debpaths").read_text(encoding="utf-8").splitlines()
    debs = dict(line.split(None, 1) for line in debpaths if line.strip())
    missing = [p for p in base if p not in debs]
    if missing:
        raise DeviceSetupError(f"debootstrap did not download {missing}; log: {log}")
    for package in base:
        deb = stage / debs[package].strip().lstrip("/")
        with log.open("a", encoding="utf-8") as out:
            out.write(f"unpacking {deb.name}\n")
            dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=out)
            tar = subprocess.run(["tar", "-x", "--keep-directory-symlink", "-C", str(stage)], stdin=dpkg.stdout, stderr=out)
            dpkg.stdout.close()
            if dpkg.wait() != 0 or tar.returncode != 0:
                raise DeviceSetupError(f"could not unpack {deb.name} into {stage}; last lines of {log}:\n{_tail(log)}")
    return len(base)


def _manylinux_platforms() -> list[str]:
    """pip's ``--platform`` matches tags exactly: list every glibc the root's (2.36) can run."""
    return [f"manylinux_2_{minor}_aarch64" for minor in range(36, 16, -1)] + ["manylinux2014_aarch64"]


def _install_wheels(stage: Path, log: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--no-input", "--disable-pip-version-check", "--no-warn-script-location",
           "--target", str(stage / SITE_PACKAGES), "--python-version", "3.11", "--implementation", "cp",
           "--only-binary=:all:"]
    for platform_tag in _manylinux_platforms():
        cmd += ["--platform", platform_tag]
    _run_logged(cmd + wheel_requirements(), log, "installing the aarch64 wheels with the host's pip", timeout=1800)


def write_wrapper(root: Path) -> Path:
    """(Re)write ``ROOT/usr/bin/slmc-python3.11``: the root's Python under qemu, for this root's
    current path. ``SLMC_QEMU_CPU`` (default ``max``) picks qemu's CPU model; it is inherited by
    subprocesses. ``-E -s``: the host's PYTHON* variables and user site-packages (x86 code) stay out."""
    qemu = _require_tool("qemu-aarch64-static", "running the arm64 root")
    root = Path(root).resolve()
    wrapper = root / WRAPPER
    script = (
        "#!/bin/sh\n"
        "# Written by slmc (slmc/device/arm64.py): the arm64 root's Python under qemu-user, without binfmt_misc.\n"
        f'exec {shlex.quote(qemu)} -L {shlex.quote(str(root))} -cpu "${{SLMC_QEMU_CPU:-max}}" '
        f'-0 {shlex.quote(str(wrapper))} {shlex.quote(str(root / "usr/bin/python3.11"))} -E -s "$@"\n'
    )
    if not wrapper.is_file() or wrapper.read_text(encoding="utf-8") != script:
        tmp = wrapper.with_name(f".{wrapper.name}.{os.getpid()}")
        tmp.write_text(script, encoding="utf-8")
        tmp.chmod(0o755)
        tmp.replace(wrapper)
    return wrapper


SMOKE_TEST = (
    "import json, platform\n"
    "import numpy, psutil, cloudpickle, tvm, tvm_ffi, tvm.rpc.server\n"
    "print(json.dumps({'machine': platform.machine(), 'python': platform.python_version(), 'tvm': tvm.__version__,"
    " 'tvm_ffi': tvm_ffi.__version__, 'numpy': numpy.__version__}))\n"
)


def _smoke_test(stage: Path, log: Path) -> dict[str, Any]:
    """Import TVM's RPC server inside the new root (which also leaves bytecode caches behind)."""
    wrapper = write_wrapper(stage)
    try:
        result = subprocess.run([str(wrapper), "-c", SMOKE_TEST], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise DeviceSetupError(f"importing TVM inside {stage} under qemu did not finish within 900 s") from None
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n$ {wrapper} -c <smoke test>\n{result.stdout}{result.stderr}")
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise DeviceSetupError(f"importing TVM inside the arm64 root under qemu failed (exit status {result.returncode}); "
                               f"last lines of {log}:\n{_tail(log)}")
    found = json.loads(lines[-1])
    if found.get("machine") != "aarch64":
        raise DeviceSetupError(f"the root's Python reports machine {found.get('machine')!r}, expected 'aarch64'")
    return found


def _check_build_tools() -> None:
    for tool in ("debootstrap", "qemu-aarch64-static", "dpkg-deb", "tar"):
        _require_tool(tool, "building the arm64 root")
    if not KEYRING.is_file():
        raise DeviceSetupError(f"building the arm64 root checks Debian's signatures with {KEYRING}, which is missing; "
                               "on Debian/Ubuntu: apt-get update && apt-get install debian-archive-keyring")
    if os.geteuid() != 0:
        raise DeviceSetupError("building the arm64 root runs debootstrap, which needs root (it creates device nodes): "
                               f"run 'slmc device arm64 up' as root once (in CI: sudo -E), or set {ROOT_ENV} to a prepared root")


def prepare_root(root: Path | str | None = None, *, progress: Progress | None = None) -> Path:
    """Build the arm64 Debian root with TVM (once) and return its path.

    ``root`` defaults to ``default_root()``. A marker file records a completed build for this
    slmc and this host's TVM version; with it the call only refreshes the qemu wrapper. A root
    is built in a sibling directory and renamed into place when complete, so an interrupted
    build leaves nothing half-done at ``root``.
    """
    say = progress or (lambda message: None)
    root = Path(root).expanduser() if root is not None else default_root()
    root = root.resolve()
    if is_prepared(root):
        write_wrapper(root)
        return root
    _check_build_tools()
    with _locked(root, say):
        if is_prepared(root):  # built by the process we waited for
            write_wrapper(root)
            return root
        if root.exists() and read_marker(root) is None and any(root.iterdir()):
            raise DeviceSetupError(f"{root} exists but is not an slmc arm64 root (no {MARKER}); "
                                   f"remove it or set {ROOT_ENV} to another directory")
        _build(root, say)
    return root


def _build(root: Path, say: Progress) -> None:
    start = time.monotonic()
    stage = root.parent / f".{root.name}.building"
    log = root.parent / f"{root.name}.build.log"
    if stage.exists():
        shutil.rmtree(stage)  # left by an interrupted build (we hold the lock)
    log.write_text(f"slmc arm64 root build for {root}\n", encoding="utf-8")
    mirror = os.environ.get(MIRROR_ENV, DEFAULT_MIRROR)
    say(f"building the arm64 root {root} (Debian {SUITE} from {mirror}; log {log}); this takes a few minutes once")
    say("  debootstrap --foreign: downloading and unpacking the base system")
    _run_logged(["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}",
                 f"--keyring={KEYRING}", SUITE, str(stage), mirror], log, "debootstrap", timeout=1800)
    count = _unpack_packages(stage, log)
    say(f"  unpacked {count} further packages (no maintainer scripts, no binfmt_misc needed)")
    say("  installing the aarch64 wheels: " + ", ".join(wheel_requirements()))
    _install_wheels(stage, log)
    say("  importing TVM inside the root under qemu (smoke test)")
    found = _smoke_test(stage, log)
    shutil.rmtree(stage / "var" / "cache" / "apt" / "archives", ignore_errors=True)  # the .debs, ~100 MB
    (stage / "var" / "cache" / "apt" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    marker = {"spec": _spec(), "mirror": mirror, "found": found, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "build_seconds": round(time.monotonic() - start, 1)}
    (stage / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    old = root.parent / f".{root.name}.old"
    if root.exists():
        if old.exists():
            shutil.rmtree(old)
        root.rename(old)  # an empty directory, or a root built for another spec
    stage.rename(root)
    shutil.rmtree(old, ignore_errors=True)
    write_wrapper(root)
    say(f"arm64 root ready in {marker['build_seconds']:.0f} s: Python {found['python']}, TVM {found['tvm']}, tvm-ffi {found['tvm_ffi']}")


# --- the RPC server ---------------------------------------------------------------------------

def _group_members(pgid: int) -> dict[int, int]:
    """``{pid: parent pid}`` of the live (non-zombie) processes in process group ``pgid`` (Linux /proc)."""
    members = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members[int(stat.parent.name)] = int(fields[1])
    return members


def _group_alive(pgid: int) -> bool:
    return bool(_group_members(pgid))


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as TVM's server does
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


@dataclass
class RpcServer:
    """A TVM RPC server running in an arm64 root under qemu, in its own process group.

    ``stop()`` ends the whole group (the server, its popen worker, a session in progress).
    """

    root: Path
    port: int
    pid: int
    cpu: str
    log_path: Path
    work_dir: Path
    host: str = LOOPBACK
    _process: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @property
    def url(self) -> str:
        return f"rpc://{self.host}:{self.port}"

    @property
    def state_path(self) -> Path:
        return self.root / STATE_DIR / f"rpc-{self.port}.json"

    def is_running(self) -> bool:
        if self._process is not None:
            self._process.poll()  # reap the leader if it exited
        return _group_alive(self.pid)

    def accepts_connections(self, timeout: float = 1.0) -> bool:
        """A TCP connection is accepted (TVM's server drops one that sends nothing, harmlessly)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout):
                return True
        except OSError:
            return False

    def wait(self, poll: float = 0.5) -> None:
        """Block until the server exits."""
        while self.is_running():
            time.sleep(poll)

    def record(self) -> Path:
        """Write the state file ``slmc device arm64 down/status`` read (for ``--background``)."""
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        data = {"pid": self.pid, "port": self.port, "host": self.host, "cpu": self.cpu, "url": self.url,
                "log": str(self.log_path), "work_dir": str(self.work_dir)}
        self.state_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        return self.state_path

    def stop(self, timeout: float = 15.0) -> None:
        """End the server's process group, idempotently: SIGTERM to the deepest processes first, so
        that each parent reaps its child (an init that does not reap orphans would keep zombies),
        then SIGKILL to whatever is left after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.is_running() and time.monotonic() < deadline:
            members = _group_members(self.pid)
            leaves = [pid for pid in members if pid not in members.values()] or list(members)
            for pid in leaves:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            wait_until = min(deadline, time.monotonic() + 2.0)
            while time.monotonic() < wait_until and any(pid in _group_members(self.pid) for pid in leaves):
                time.sleep(0.05)
        if self.is_running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            kill_deadline = time.monotonic() + 5.0
            while self.is_running() and time.monotonic() < kill_deadline:
                time.sleep(0.1)
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=1)
        shutil.rmtree(self.work_dir, ignore_errors=True)
        self.state_path.unlink(missing_ok=True)

    def __enter__(self) -> RpcServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def recorded_servers(root: Path | str | None = None) -> list[RpcServer]:
    """Background servers recorded in ``root`` that are still running (stale records are removed)."""
    root = (Path(root).expanduser() if root is not None else default_root()).resolve()
    servers = []
    for path in sorted((root / STATE_DIR).glob("rpc-*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            server = RpcServer(root, int(data["port"]), int(data["pid"]), str(data["cpu"]), Path(data["log"]),
                               Path(data["work_dir"]), str(data["host"]))
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        cmd = _cmdline(server.pid)
        # the pid must still be our server (not a reused pid) before anyone signals its group
        if server.is_running() and "tvm.exec.rpc_server" in cmd and str(root) in cmd:
            servers.append(server)
        else:
            path.unlink(missing_ok=True)
    return servers


def start_rpc_server(root: Path | str | None = None, port: int = 9090, *, cpu: str = "max", timeout: float = 180.0) -> RpcServer:
    """Start ``python -m tvm.exec.rpc_server --host 127.0.0.1 --port PORT`` in the prepared root.

    Binds exactly ``port`` on 127.0.0.1 (the server runs any code a client uploads: it must not
    listen on other interfaces). ``cpu`` is qemu's CPU model (``max``, ``cortex-a76``, ...).
    Returns once the server accepts connections; ``DeviceSetupError`` if it exits first or does
    not within ``timeout`` seconds (TVM's import alone takes ~10 s under emulation).
    """
    root = (Path(root).expanduser() if root is not None else default_root()).resolve()
    if not is_prepared(root):
        raise DeviceSetupError(f"{root} is not a prepared arm64 root: run 'slmc device arm64 up' or slmc.device.prepare_root() first")
    if not 0 < port < 65535:
        raise DeviceSetupError(f"port {port} is not a usable TCP port")
    if _port_in_use(port):
        raise DeviceSetupError(f"port {port} on {LOOPBACK} is already in use (another RPC server? see 'slmc device arm64 status')")
    wrapper = write_wrapper(root)
    work_dir = root / "tmp" / f"slmc-rpc-{port}"
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    log_path = root / LOG_DIR / f"slmc-rpc-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SLMC_QEMU_CPU": cpu, "TMPDIR": str(work_dir)}
    cmd = [str(wrapper), "-m", "tvm.exec.rpc_server", "--host", LOOPBACK, "--port", str(port), "--port-end", str(port + 1)]
    with log_path.open("w", encoding="utf-8") as log:
        log.write(f"$ SLMC_QEMU_CPU={cpu} {shlex.join(cmd)}\n")
        log.flush()
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   cwd=work_dir, start_new_session=True)
    server = RpcServer(root, port, process.pid, cpu, log_path, work_dir, LOOPBACK, process)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            server.stop()
            raise DeviceSetupError(f"TVM's RPC server in {root} exited with status {process.returncode} before accepting "
                                   f"connections; last lines of {log_path}:\n{_tail(log_path)}")
        if server.accepts_connections(timeout=0.5):
            return server
        if time.monotonic() > deadline:
            server.stop()
            raise DeviceSetupError(f"TVM's RPC server in {root} did not accept connections on {LOOPBACK}:{port} within "
                                   f"{timeout:g} s; last lines of {log_path}:\n{_tail(log_path)}")
        time.sleep(0.25)
