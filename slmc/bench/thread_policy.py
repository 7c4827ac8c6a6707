"""How many threads each engine of ``slmc bench`` uses and how its idle threads wait: a registry.

``engine-default`` (the fair default, issue 22): every engine runs in a fresh process with the thread
environment variables below removed, and picks its own threads and wait policy -- PyTorch its intra-op
default, ONNX Runtime its default session (spinning pool, one thread per physical core), TVM its
default pool, llama.cpp the thread count of its own command-line tools (one per physical core).
``common-passive``: the same ``threads`` for every engine and passive waiting wherever the engine
has a switch (``OMP_WAIT_POLICY=PASSIVE``, ``TVM_THREAD_POOL_SPIN_COUNT=0``, ONNX Runtime's
``session.intra_op.allow_spinning=0``; llama.cpp's pool has none exposed and polls). A common policy
changes engines' speed (it took llama.cpp from 3.3 to 17 ms per token here), so the report records
the policy and every engine's resulting threads next to the numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from slmc.errors import InputError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "TVM_NUM_THREADS", "TVM_THREAD_POOL_SPIN_COUNT",
                    "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "GOMP_SPINCOUNT")


@dataclass(frozen=True)
class ThreadPolicy:
    name: str
    threads: int | None  # None: each engine's own default
    passive: bool  # ask every engine that has a switch to wait passively
    env: dict[str, str] = field(default_factory=dict)
    override: bool = False  # one engine instance's thread count (``with_threads``), not the run's policy

    def with_threads(self, threads: int) -> ThreadPolicy:
        """This policy with ``threads`` threads for one engine instance (``slmc@1t``): every engine's switch for
        its thread count (TVM's and OpenMP's variables, ``threads`` for llama.cpp, ONNX Runtime and PyTorch);
        the wait policy stays the run's."""
        return ThreadPolicy(f"{self.name}, {threads} thread{'s' * (threads > 1)} for this engine", threads, self.passive,
                            {**self.env, "OMP_NUM_THREADS": str(threads), "TVM_NUM_THREADS": str(threads)}, True)

    def child_env(self) -> dict[str, str]:
        """The measuring process's environment: this shell's without the thread variables, plus ``env``."""
        env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
        env.update(self.env)
        return env

    def to_json(self) -> dict[str, Any]:
        removed = sorted(k for k in THREAD_VARIABLES if k in os.environ and k not in self.env)
        return {"name": self.name, "threads": self.threads, "passive_wait": self.passive, "env": dict(self.env),
                "removed_from_env": removed, "common": self.threads is not None and not self.override,
                "override": self.override}


def engine_default(threads: int | None = None) -> ThreadPolicy:
    if threads is not None:
        raise InputError("--threads applies to a common thread policy only (--thread-policy common-passive); "
                         "'engine-default' lets every engine pick its own")
    return ThreadPolicy("engine-default", None, False)


def common_passive(threads: int | None = None) -> ThreadPolicy:
    from slmc.bench.machine import cores

    n = threads or cores()
    return ThreadPolicy("common-passive", n, True, {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(n),
                                                     "TVM_NUM_THREADS": str(n), "TVM_THREAD_POOL_SPIN_COUNT": "0"})


THREAD_POLICIES = {"engine-default": engine_default, "common-passive": common_passive}


def thread_policy(name: str, threads: int | None = None) -> ThreadPolicy:
    if name not in THREAD_POLICIES:
        from slmc.errors import did_you_mean

        raise InputError(f"unknown --thread-policy {name!r}; known: {', '.join(THREAD_POLICIES)}{did_you_mean(name, THREAD_POLICIES)}")
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}")
    return THREAD_POLICIES[name](threads)


def from_json(data: dict[str, Any]) -> ThreadPolicy:
    return ThreadPolicy(data["name"], data["threads"], data["passive_wait"], dict(data["env"]), data.get("override", False))
