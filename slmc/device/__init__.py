"""Devices that run artifacts this machine cannot: an emulated arm64 board, or real boards and phones.

Both are reached the same way, through TVM's RPC server (``python -m tvm.exec.rpc_server``) and
``slmc.artifact.remote_runtime.RemoteModel``. ``slmc.device.arm64`` builds an arm64 Debian root and runs that
server inside it under qemu-user; a real board runs the same server itself. See docs/devices.md.

Layer 7 (beside ``slmc.frontend``, ``slmc.verify`` and ``slmc.cache``, which it does not import): imports
``slmc.backend`` and below.
"""

from __future__ import annotations

from slmc.device.arm64 import DeviceSetupError, RpcServer, default_root, prepare_root, start_rpc_server

__all__ = ["DeviceSetupError", "RpcServer", "default_root", "prepare_root", "start_rpc_server"]
