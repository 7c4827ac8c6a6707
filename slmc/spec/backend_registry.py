"""The backend registry: one backend per target kind (a descriptor's ``kind``), registered by decorator.

The registry key is the descriptor's ``kind`` (``cpu``, ``gpu``, ``npu``). ``TargetKind`` is the part
of a backend that layers below ``slmc.backend`` ask about (the descriptor's validation, op coverage,
remote execution); the full interface, with the Relax pipeline phases and the build hooks, is
``slmc.backend.base.Backend``. The built-in backends (``slmc.backend.kinds``) are imported by name
on first use, like the built-in passes (``slmc.spec.pass_registry``), so nothing above ``slmc.spec``
is imported when this module is, and registering a kind must not import TVM or torch (descriptors
are validated without them).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, TypeVar

from slmc.errors import did_you_mean

if TYPE_CHECKING:
    from slmc.spec.target import TargetDescriptor

BUILTIN_BACKENDS = "slmc.backend.kinds"


class TargetKind:
    """What every layer may ask a target kind's backend. Subclasses set the class attributes.

    ``kind`` is set by ``register_backend``. ``tvm_kinds``: the TVM target kinds (``tvm.kind``) its
    code is generated for. ``npu_section``: the descriptor's ``npu`` section is required (else not
    allowed). ``falls_back_to_host``: ops the target lacks run on the host CPU (partitioning reports
    them), so the graph's op coverage is not checked against ``ops.supported``. ``remote_execution``:
    an artifact that does not run here can be verified on a TVM RPC device (``device rpc://``).
    ``compiled_vm``: its artifacts may hold the Relax VM's functions code-generated as TIR/LLVM (TVM 0.27's
    ``relax.build(exec_mode="compiled")``) instead of bytecode, and every runtime of the kind runs them
    (the descriptor's ``vm: compiled``; docs/dev-notes.md "Session 12: the VM's compiled mode").
    """

    kind: ClassVar[str] = ""
    tvm_kinds: ClassVar[frozenset[str]] = frozenset()
    npu_section: ClassVar[bool] = False
    falls_back_to_host: ClassVar[bool] = False
    remote_execution: ClassVar[bool] = False
    compiled_vm: ClassVar[bool] = False

    def descriptor_problems(self, target: TargetDescriptor) -> list[str]:
        """What a descriptor of this kind lacks beyond its fields' own validation (default: nothing).

        Precondition: every field of ``target`` is valid and ``tvm.kind`` is one of ``tvm_kinds``."""
        return []


class DuplicateBackendError(ValueError):
    """Two backends were registered for one kind (a programming error, not a user error)."""


class UnknownBackendError(ValueError):
    """A kind no backend is registered for; the message lists the registered kinds and the nearest."""


_REGISTRY: dict[str, TargetKind] = {}
Kind = TypeVar("Kind", bound=type[TargetKind])


def register_backend(kind: str) -> Callable[[Kind], Kind]:
    """Register the decorated ``TargetKind`` subclass (instantiated once, without arguments) as the
    backend of descriptor kind ``kind``. Raises ``DuplicateBackendError`` if the kind is taken."""

    def decorate(cls: Kind) -> Kind:
        if kind in _REGISTRY:
            raise DuplicateBackendError(f"target kind '{kind}' is already registered by {type(_REGISTRY[kind]).__module__}")
        if not cls.tvm_kinds:
            raise TypeError(f"backend {cls.__qualname__} for kind '{kind}' declares no tvm_kinds")
        cls.kind = kind
        _REGISTRY[kind] = cls()
        return cls

    return decorate


def unregister_backend(kind: str) -> None:
    """Remove a backend (for tests that register temporary kinds)."""
    _REGISTRY.pop(kind, None)


def _load_builtin_backends() -> None:
    importlib.import_module(BUILTIN_BACKENDS)


def backend_kinds() -> list[str]:
    """The registered kinds, sorted (the built-in backends are imported on first use)."""
    _load_builtin_backends()
    return sorted(_REGISTRY)


def one_of(names: list[str]) -> str:
    """``'a', 'b' or 'c'`` (pydantic's wording for a literal's choices)."""
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def unknown_kind_message(kind: str) -> str:
    """Why ``kind`` is not a target kind: the registered ones, and the nearest if one is close."""
    kinds = backend_kinds()
    return f"unknown target kind '{kind}': expected {one_of(kinds)}{did_you_mean(kind, kinds)}"


def get_backend(kind: str) -> TargetKind:
    """The backend registered for ``kind``; ``UnknownBackendError`` (listing the kinds) if none is."""
    _load_builtin_backends()
    backend = _REGISTRY.get(kind)
    if backend is None:
        raise UnknownBackendError(unknown_kind_message(kind))
    return backend
