"""Which parameters of a TIR PrimFunc are buffers (TVM 0.27: a ``tirx.Var`` typed ``BufferType``) and which are
scalars (a ``PrimType`` ``Var``: a dynamic size Relax passes explicitly). Asked by the schedules
(``row_branch``, ``one_token``) and by the backend's OpenCL kernel runner (``slmc.backend.opencl_kernel_run``)."""

from __future__ import annotations

from tvm import tirx
from tvm.tirx.buffer import BufferType


def is_buffer(param: tirx.Var) -> bool:
    """A PrimFunc parameter is a buffer (a ``Var`` whose type is a ``BufferType``), not a scalar."""
    return isinstance(param.ty, BufferType)


def buffer_params(func: tirx.PrimFunc) -> list[tirx.Var]:
    """The PrimFunc's buffer parameters, in order."""
    return [p for p in func.params if is_buffer(p)]
