"""Running an artifact on another machine through TVM RPC: ``RemoteModel("rpc://HOST:PORT", artifact)``.

The other machine runs TVM's RPC server (``python -m tvm.exec.rpc_server``): the emulated arm64
board of ``slmc device arm64 up``, or a real board or phone (docs/devices.md). ``RemoteModel``
uploads ``model.so``, loads it there, uploads the weights once as remote tensors and runs
``main`` through the Relax VM's stateful interface (``set_input``/``invoke_stateful``/
``get_outputs``), the calling convention that works across RPC: a remote ``main`` called directly
returns its output tuple as an opaque remote object.

``RemoteModel`` is a ``CompiledModel``: the input checks against ``manifest.signature``,
``run_numpy``, ``step`` (the KV-cache contract) and ``__call__`` are that class's code.
"""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path
from typing import Any

import tvm
from tvm import relax, rpc

from slmc.artifact.layout import LIBRARY, intact_manifest
from slmc.errors import ArtifactError, DeviceConnectionError, DeviceError, DeviceURLError, exception_summary
from slmc.artifact.runtime import CompiledModel
from slmc.spec.backend_registry import get_backend

URL_PATTERN = re.compile(r"^rpc://(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})/?$")
CONNECT_TIMEOUT = 30.0
SESSION_TIMEOUT = 3600.0
# What TVM raises for RPC, load and run failures (RPCError, InternalError, ... are RuntimeErrors).
REMOTE_FAILURES = (RuntimeError, OSError, ValueError, TypeError)


def parse_device_url(url: str) -> tuple[str, int]:
    """``rpc://HOST:PORT`` -> ``(HOST, PORT)``; ``DeviceURLError`` for anything else."""
    match = URL_PATTERN.match(str(url))
    port = int(match["port"]) if match else 0
    if not match or not 0 < port < 65536:
        raise DeviceURLError(f"device URL {url!r} is not of the form rpc://HOST:PORT (e.g. rpc://127.0.0.1:9090)")
    return match["host"].strip("[]"), port


def check_reachable(url: str, timeout: float = 10.0) -> tuple[str, int]:
    """Something accepts TCP connections at ``url`` (cheap: TVM's server drops a silent connection)."""
    host, port = parse_device_url(url)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise DeviceConnectionError(
            url, f"no TVM RPC server answers at {url}: {exc.strerror or exc}; start one with 'slmc device arm64 up "
                 f"--port {port}' (emulated board) or 'python -m tvm.exec.rpc_server --port {port}' on the device (docs/devices.md)"
        ) from None
    return host, port


def connect(url: str, timeout: float = CONNECT_TIMEOUT, session_timeout: float = SESSION_TIMEOUT) -> rpc.RPCSession:
    """Open a TVM RPC session with the server at ``url``, in at most ``timeout`` seconds.

    ``session_timeout`` is sent to the server, which ends the session after that many seconds.
    TVM's own connect has no timeout (it waits forever for a server that accepts the TCP
    connection but does not answer, e.g. one busy with another client), so it runs in a thread.
    """
    host, port = check_reachable(url, timeout=min(timeout, 10.0))
    outcome: dict[str, Any] = {}

    def attempt() -> None:
        try:
            outcome["session"] = rpc.connect(host, port, session_timeout=session_timeout)
        except REMOTE_FAILURES as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=attempt, name=f"slmc-connect-{host}:{port}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise DeviceConnectionError(
            url, f"{url} accepted a TCP connection but did not complete TVM's RPC handshake within {timeout:g} s "
                 "(TVM's RPC server serves one client at a time: is another session open? is it a TVM RPC server?)"
        )
    if "error" in outcome:
        raise DeviceConnectionError(url, f"could not open a TVM RPC session with {url}: {exception_summary(outcome['error'])}") from outcome["error"]
    return outcome["session"]


class _StatefulMain:
    """``vm[name](*args)`` across RPC: set_input, invoke_stateful, then the outputs (remote tensors).

    The outputs are read with the VM's ``get_output_arity``/``get_output`` directly: TVM's
    ``VirtualMachine.get_outputs`` builds a self-referencing closure that keeps the VM, hence
    the RPC session, alive until the garbage collector runs, and the server serves no one else.
    """

    def __init__(self, vm: relax.VirtualMachine):
        self._vm = vm
        self._arity = vm.module["get_output_arity"]
        self._output = vm.module["get_output"]

    def __getitem__(self, name: str) -> Any:
        def call(*args: Any) -> Any:
            self._vm.set_input(name, *args)
            self._vm.invoke_stateful(name)
            return self._outputs(name)

        return call

    def _outputs(self, name: str, *index: int) -> Any:
        arity = self._arity(name, *index)
        if arity == -1:
            return self._output(name, *index)
        return tuple(self._outputs(name, *index, i) for i in range(arity))


class RemoteModel(CompiledModel):
    """An artifact loaded on a device through TVM RPC; ``run_numpy`` like ``CompiledModel``'s.

    ``url`` is ``rpc://HOST:PORT``. Only CPU (``llvm``) artifacts: they run on the device's CPU.
    Connection, load and run failures raise ``DeviceConnectionError``/``DeviceError`` naming the
    URL. Close it (or use ``with``) to end the session: TVM's server serves one client at a time.
    """

    def __init__(self, url: str, artifact_dir: str | Path, *, check_hashes: bool = True,
                 connect_timeout: float = CONNECT_TIMEOUT, session_timeout: float = SESSION_TIMEOUT):
        # CompiledModel.__init__ is not called: it loads the library into this process.
        self.url = url
        parse_device_url(url)
        self.path = Path(artifact_dir)
        self.manifest = intact_manifest(self.path, check_hashes)
        self.target = self.manifest.target
        if not get_backend(self.target.kind).remote_execution:
            raise ArtifactError(f"artifact {self.path} is for target kind '{self.target.kind}' (tvm kind "
                                f"'{self.target.tvm.kind}'), which TVM RPC does not run; RemoteModel runs CPU (llvm) artifacts")
        self.inputs = self.manifest.signature.inputs
        self.outputs = self.manifest.signature.outputs
        cache = self.manifest.kv_cache
        self.kv_cache = cache.spec() if cache is not None else None
        # over RPC `main` and the copy contract: a remote resident cache would need the stateful calls of
        # _StatefulMain to carry the cache buffers and a shape argument (not done yet)
        self.resident, self._resident = False, None
        tokenizer = self.manifest.tokenizer
        self._tokenizer_entry = tokenizer.model_dump() if tokenizer is not None else None
        self._session = connect(url, connect_timeout, session_timeout)
        try:
            self._session.upload(str(self.path / LIBRARY), target=LIBRARY)
            library = self._session.load_module(LIBRARY)
            self._device = self._session.cpu(0)
            self._vm = _StatefulMain(relax.VirtualMachine(library, self._device))
            self._weights = [tvm.runtime.tensor(a, self._device) for a in self.stored_weights().values()]
        except REMOTE_FAILURES as exc:
            self.close()
            raise DeviceError(url, f"the device at {url} could not load {self.path / LIBRARY} (code for "
                                   f"{self.target.triple_arch}, CPU '{self.target.tvm.mcpu or 'generic'}'): {exception_summary(exc)}") from exc

    def run_numpy(self, *inputs: Any) -> list[Any]:
        if self._session is None:
            raise DeviceError(self.url, f"the session with {self.url} is closed")
        try:
            return super().run_numpy(*inputs)
        except REMOTE_FAILURES as exc:
            raise DeviceError(self.url, f"running {self.path} on the device at {self.url} failed: {exception_summary(exc)}") from exc

    def close(self) -> None:
        """End the RPC session (the server frees the module and the weights)."""
        self._vm = None
        self._weights = []
        self._device = None  # a remote Device holds its session
        self._session = None

    def __enter__(self) -> RemoteModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_artifact(path: str | Path, device: str | None = None, *, check_hashes: bool = True) -> CompiledModel:
    """The artifact at ``path``: loaded in this process (``device`` None: its target must run here,
    else ``ArtifactNotRunnableError``), or on the TVM RPC server ``device`` (``rpc://HOST:PORT``,
    ``RemoteModel``). Use it with ``with``: a device session ends on exit."""
    if device is None:
        return CompiledModel(path, check_hashes=check_hashes)
    return RemoteModel(device, path, check_hashes=check_hashes)
