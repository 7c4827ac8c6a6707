"""Fixtures of tests/slmc: one cheap tiny-lm compile through a compile cache, shared by the cache,
report and JUnit tests (a ~10 s build, done once per session)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

CHEAP_RECIPE = """\
passes: [{dead_code_elimination: {}}]
verify:
  num_samples: 1
  gates: {min_cosine: 0.99}
"""


@dataclass
class CachedCompile:
    """A recipe file, a cache holding its compile of tiny-lm on host, and that first artifact."""

    workdir: Path
    recipe: Path
    cache: Path
    artifact: Path
    result: object  # slmc.CompileResult of the compile that filled the cache


@pytest.fixture(scope="session")
def cached_compile(tmp_path_factory):
    import slmc

    workdir = tmp_path_factory.mktemp("cached-compile")
    recipe = workdir / "recipe.yaml"
    recipe.write_text(CHEAP_RECIPE)
    cache = workdir / "cache"
    result = slmc.compile("tiny-lm", recipe, "host", workdir / "first", cache_dir=cache)
    assert result.cache["status"] == "miss"
    return CachedCompile(workdir, recipe, cache, result.artifact, result)


@dataclass
class HostRpcServer:
    """TVM's own RPC server (``python -m tvm.exec.rpc_server``) on 127.0.0.1: a real TVM RPC server
    whose CPU is this machine's, so it serves host artifacts (``--device`` tests that need no board)."""

    url: str
    process: object  # subprocess.Popen


@pytest.fixture(scope="session")
def host_rpc_server():
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
                                "--port-end", str(port + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"TVM's RPC server did not start on 127.0.0.1:{port} (exit code {process.poll()})")
            time.sleep(0.2)
    yield HostRpcServer(f"rpc://127.0.0.1:{port}", process)
    process.terminate()
    process.wait(timeout=30)
