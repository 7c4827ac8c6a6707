"""Relax rewrite: no ``kill_object`` in a function whose memory is all statically planned and small.

TVM's ``KillAfterLastUse`` (in its CPU and GPU ``finalize_passes``) writes ``R.vm.kill_object(x)`` after the
last use of every tensor, view and storage; each becomes a ``vm.builtin.null_value`` call writing the register,
in the bytecode VM and in compiled mode alike (docs/dev-notes.md, "Session 12: the Relax VM's compiled mode").
A one-token decode step of SmolLM-135M (30 layers) makes 711 of its 1,585 builtin calls this way. In a function
whose every storage is a constant-size ``R.vm.alloc_storage`` (``StaticPlanBlockMemory`` planned them all, with
the ``tir_var_upper_bound`` of its symbolic sizes), such a kill frees little or nothing:

- a tensor carved from a storage (``R.vm.alloc_tensor(storage, ...)``) holds a reference to that storage, and
  the plan reuses each storage for many tensors, so killing one of them frees an array header only;
- a view (``vm.builtin.reshape``) of such a tensor or of a parameter frees a header only too;
- without the kills, every planned storage stays allocated until the function returns (its registers are
  released then: the bytecode VM's frame, compiled mode's ``AnyList``). The call's peak memory grows by at
  most the sum of its storages' sizes, less the storage of a returned tensor (held by the caller anyway: the
  step's logits), which this pass bounds: ``MAX_HELD_BYTES``.

So in a function whose storages are all constant-size and sum to at most ``MAX_HELD_BYTES``, the pass drops
the kill of every storage, of every tensor carved from one, and of every view of those or of a parameter.
Any other kill (an object a ``call_packed`` returned, say) is kept. A function with a symbolic-size storage,
or with more planned memory than the bound (a prefill over hundreds of positions), is left as it is.

Precondition: runs after ``KillAfterLastUse``, ``LowerRuntimeBuiltin`` and ``VMShapeLower`` (the VM's own
ops: ``relax.vm.alloc_storage``, ``relax.vm.alloc_tensor``, ``relax.vm.kill_object``); the last of the
finalize passes (``slmc.backend.base.Backend.finalize_passes``), on every Relax function of the module.
"""

from __future__ import annotations

import tvm
from tvm import relax

MAX_HELD_BYTES = 1 << 20  # SmolLM-135M's decode step: 34,060 bytes besides its logits; a prefill of 128+ rows: MBs
_ALLOC_STORAGE = tvm.ir.Op.get("relax.vm.alloc_storage")
_ALLOC_TENSOR = tvm.ir.Op.get("relax.vm.alloc_tensor")
_KILL = tvm.ir.Op.get("relax.vm.kill_object")
_VIEWS = frozenset({"vm.builtin.reshape"})


def _bindings(func: relax.Function) -> list[relax.VarBinding]:
    body = func.body
    if not isinstance(body, relax.SeqExpr):
        return []
    return [binding for block in body.blocks for binding in block.bindings if isinstance(binding, relax.VarBinding)]


def _constant_bytes(call: relax.Call) -> int | None:
    """The byte size of an ``alloc_storage`` call when it is a constant, else ``None``."""
    shape = call.args[0]
    if not isinstance(shape, relax.ShapeExpr) or len(shape.values) != 1 \
            or not isinstance(shape.values[0], tvm.tirx.IntImm):
        return None
    return int(shape.values[0].value)


def _returned(body: relax.SeqExpr) -> list[relax.Var]:
    result = body.body
    fields = result.fields if isinstance(result, relax.Tuple) else [result]
    return [field for field in fields if isinstance(field, relax.Var)]


def planned_objects(func: relax.Function) -> tuple[set[relax.Var], int] | None:
    """The variables whose kill frees nothing worth its call (module docstring), with the bytes of the
    function's storages the caller does not receive; ``None`` when a storage has a symbolic size or they sum to
    more than ``MAX_HELD_BYTES``."""
    planned: set[relax.Var] = set(func.params)
    sizes: dict[relax.Var, int] = {}
    storage_of: dict[relax.Var, relax.Var] = {}  # a tensor or view carved from a storage -> that storage
    for binding in _bindings(func):
        value = binding.value
        if not isinstance(value, relax.Call):
            continue
        if value.op.same_as(_ALLOC_STORAGE):
            size = _constant_bytes(value)
            if size is None:
                return None
            sizes[binding.var] = size
            planned.add(binding.var)
        elif value.op.same_as(_ALLOC_TENSOR) and value.args[0] in planned:
            planned.add(binding.var)
            storage_of[binding.var] = value.args[0]
        elif isinstance(value.op, relax.ExternFunc) and value.op.global_symbol in _VIEWS and value.args[0] in planned:
            planned.add(binding.var)
            if value.args[0] in storage_of:
                storage_of[binding.var] = storage_of[value.args[0]]
    returned = {storage_of[var] for var in _returned(func.body) if var in storage_of}
    held = sum(size for storage, size in sizes.items() if storage not in returned)
    if held > MAX_HELD_BYTES:
        return None
    return planned - set(func.params), held


def _is_dropped_kill(binding: relax.Binding, planned: set[relax.Var]) -> bool:
    value = binding.value
    return isinstance(value, relax.Call) and value.op.same_as(_KILL) and value.args[0] in planned


def _without_kills(func: relax.Function, planned: set[relax.Var]) -> relax.Function:
    blocks = []
    for block in func.body.blocks:
        kept = [binding for binding in block.bindings if not _is_dropped_kill(binding, planned)]
        blocks.append(relax.DataflowBlock(kept) if isinstance(block, relax.DataflowBlock) else relax.BindingBlock(kept))
    body = relax.SeqExpr(blocks, func.body.body)
    return relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs, func.span)


@tvm.transform.module_pass(opt_level=0, name="slmc_planned_kills")
def planned_kills(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
    """Every Relax function whose memory is planned and small, without the kills that free nothing (module
    docstring)."""
    updates = {}
    for gv, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        found = planned_objects(func)
        if found is not None:
            updates[gv] = _without_kills(func, found[0])
    if not updates:
        return mod
    out = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    for gv, func in updates.items():
        out[gv] = func
    return out
