"""Relax rewrite: ``resident_step``, the decode step with static shapes (``resident_last`` with ``T = 1``).

``resident_all`` / ``resident_last`` take any number ``T`` of new tokens. With ``T`` symbolic every call
builds its shapes at run time (``vm.builtin.make_shape``, ``vm.builtin.reshape`` views), and the kernels
carry both a one-row and a many-row loop nest and pick one per call (``slmc.schedules.row_branch``). A
decode step always feeds one token, so ``resident_step`` (``slmc.graph.kv_cache.RESIDENT_STEP``) is
``resident_last`` with ``T`` bound to 1 (``relax.Function.bind_symbolic_vars``): the same operations on
static shapes, which legalization and the schedule rules then build as one-row kernels; only the past
length ``P`` stays symbolic. Measured on 4 layers of the SmolLM-135M shape (int4 g32, context 128,
``benchmarks/decode_step_profile.py``; docs/dev-notes.md): 351 VM builtin calls per step instead of 650
(``make_shape`` 197 -> 21), the same 107 kernels. Exact up to float rounding (its kernels are the one-row
schedules of the same sums: measured 1.5e-6 largest difference in the 4-layer model's logits).
"""

from __future__ import annotations

from tvm import relax, tirx

from slmc.schedules.not_resident import NotResident


def one_token_function(last: relax.Function) -> relax.Function:
    """``resident_last`` (or ``resident_all``) with its token count bound to 1; ``NotResident`` when
    ``input_ids`` has no symbolic token count."""
    shape = getattr(last.params[0].ty, "shape", None)
    dims = list(shape.values) if isinstance(shape, relax.ShapeExpr) else []
    if len(dims) != 2 or not isinstance(dims[1], tirx.Var):
        raise NotResident("input_ids of the resident function has no symbolic token count")
    return last.bind_symbolic_vars({dims[1]: tirx.IntImm("int64", 1)})  # Relax shapes are int64
