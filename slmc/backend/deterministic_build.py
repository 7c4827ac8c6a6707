"""Deterministic parameter order for the PrimFuncs TVM generates from TE during legalization.

Root cause
----------
TVM 0.27's ``relax.utils.gen_call_tir_inputs`` (behind ``BlockBuilder.call_te``, which every
``LegalizeOps`` rule uses) collects the symbolic sizes a kernel needs but cannot read from its
input shapes (e.g. ``past`` and ``tokens`` in a causal-attention ``matmul`` whose key length is
``past + tokens``) into a Python ``set`` of TVM objects and appends them as ``list(set)``. TVM
objects hash by address, so the order of those scalar parameters changes from one process to
the next. Two consequences, both seen on ``tiny-lm``:

* the same kernel gets ``(s87, s10)`` in one run and ``(s10, s87)`` in another, so the generated
  code (register allocation, argument unpacking) and the ``.so`` differ;
* ``BlockBuilder.add_func`` deduplicates structurally equal kernels, so whether two attention
  matmuls share one PrimFunc depends on the order, which renames every later kernel.

Fix
---
While :func:`deterministic_call_te` is active, ``call_te`` (and the layout-transform legalizer,
the other caller) get the same PrimFunc and call arguments with those trailing symbolic-size
parameters sorted by name, before deduplication. Parameters with equal names keep TVM's order
(none occur in slmc's models: torch.export names every symbol uniquely). Nothing else changes,
so the kernel computes exactly what TVM generated.

The second source is ``relax.transform.VMShapeLower``: the host ``shape_func`` kernels it writes
compute the symbolic sizes each step needs into the VM's shape heap, in an order that changes
between processes (e.g. ``H[7] = ...`` before or after ``H[8] = ...``). :func:`sorted_shape_funcs`,
run after slmc's pipeline, sorts such a kernel's stores by heap slot when none of them reads a slot
another one writes (then the order cannot change a result). ``deterministic_pipeline`` adds it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import tvm
import tvm_ffi
from tvm import tirx

_PATCHED_MODULES = ("tvm.relax.block_builder", "tvm.relax.transform.legalize_ops.manipulate")


def _is_size_argument(arg: Any) -> bool:
    """An int64 scalar passed to ``call_tir`` as a symbolic size (not a relax tensor or scalar input)."""
    return tvm.ir.is_prim_expr(arg) and str(arg.ty.dtype) == "int64"


def sort_size_parameters(func: tirx.PrimFunc, call_args: list[Any]) -> tuple[tirx.PrimFunc, list[Any]]:
    """``func`` and ``call_args`` with the trailing symbolic-size arguments sorted by parameter name.

    Precondition: ``func``'s parameters are ``call_args``' counterparts followed by the outputs,
    as ``gen_call_tir_inputs`` builds them (the size arguments are the last ``call_args``).
    """
    count = 0
    while count < len(call_args) and _is_size_argument(call_args[len(call_args) - 1 - count]):
        count += 1
    if count < 2:
        return func, call_args
    params = list(func.params)
    start = len(call_args) - count
    order = sorted(range(start, len(call_args)), key=lambda i: str(params[i].name))
    if order == list(range(start, len(call_args))):
        return func, call_args
    new_params = params[:start] + [params[i] for i in order] + params[len(call_args):]
    new_args = list(call_args[:start]) + [call_args[i] for i in order]
    return tirx.PrimFunc(new_params, func.body, func.ret_type, func.attrs, func.span), new_args


def _sorted(original: Callable[..., Any]) -> Callable[..., Any]:
    def gen_call_tir_inputs(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        tir_func, call_args, output_ty = original(func, *args, **kwargs)
        tir_func, call_args = sort_size_parameters(tir_func, list(call_args))
        return tir_func, call_args, output_ty

    gen_call_tir_inputs.slmc_sorted = True  # type: ignore[attr-defined]
    return gen_call_tir_inputs


@contextmanager
def deterministic_call_te() -> Iterator[None]:
    """Within the block, TE-generated PrimFuncs take their symbolic sizes in name order."""
    import importlib

    modules = [importlib.import_module(name) for name in _PATCHED_MODULES]
    saved = [m.gen_call_tir_inputs for m in modules]
    for module, original in zip(modules, saved):
        if not getattr(original, "slmc_sorted", False):
            module.gen_call_tir_inputs = _sorted(original)
    try:
        yield
    finally:
        for module, original in zip(modules, saved):
            module.gen_call_tir_inputs = original


def _slot(index: Any) -> int | None:
    return int(index.value) if isinstance(index, tirx.IntImm) else None


def sort_heap_stores(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """``func`` with its body's stores sorted by slot, if its body is only independent stores to
    constant slots of one buffer (a VM shape function); else ``func`` unchanged."""
    body = func.body
    if not isinstance(body, tirx.SeqStmt) or len(body.seq) < 2:
        return func
    stores = list(body.seq)
    if not all(isinstance(st, tirx.BufferStore) and len(st.indices) == 1 and _slot(st.indices[0]) is not None
               and st.buffer.same_as(stores[0].buffer) for st in stores):
        return func
    written = [_slot(st.indices[0]) for st in stores]
    reads: list[int | None] = []

    def record(load: Any) -> None:
        if load.source.same_as(stores[0].buffer):
            reads.append(_slot(load.indices[0]) if len(load.indices) == 1 else None)

    for st in stores:  # a buffer load is a tvm.ir.TensorLoad in TVM 0.27 (tirx.BufferLoad builds one)
        tvm_ffi.structural_walk(st.value, (tvm.ir.expr.TensorLoad, record))
    if len(set(written)) != len(written) or None in reads or set(reads) & set(written):
        return func
    ordered = sorted(stores, key=lambda st: _slot(st.indices[0]))
    return func if ordered == stores else func.with_body(tirx.SeqStmt(ordered))


@tvm.transform.module_pass(opt_level=0, name="slmc_sorted_shape_funcs")
def sorted_shape_funcs(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Host TIR functions (``tirx.is_host_func``) with independent heap stores in slot order."""
    updates = {}
    for gvar, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc) and func.attrs is not None and "tirx.is_host_func" in func.attrs:
            new = sort_heap_stores(func)
            if not new.same_as(func):
                updates[gvar] = new
    for gvar, func in updates.items():
        mod[gvar] = func
    return mod


def deterministic_pipeline(pipeline: tvm.transform.Pass) -> tvm.transform.Pass:
    """``pipeline`` followed by ``sorted_shape_funcs``."""
    return tvm.transform.Sequential([pipeline, sorted_shape_funcs], name="slmc_deterministic_pipeline")
