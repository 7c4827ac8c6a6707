"""NPU regions of a Relax module: ``FuseOpsByPattern`` + ``MergeCompositeFunctions`` (TVM's BYOC partitioning).

Pattern ``npu.w8a8_linear``: a ``call_tir`` of a PrimFunc carrying ``slmc.kernel = "w8a8_linear"``
(``slmc.quantization.tvm_kernels``); each match becomes a composite function. Composites are then
merged into ``Codegen: npu`` functions by ``MergeCompositeFunctions``, which groups composites that
feed each other directly. TVM 0.27's ``MergeCompositeFunctions`` fails with ``InternalError:
Check failed: memo_.count(...)`` on slmc's LM graphs (a binding with no tensor inputs, such as the
``R.arange`` of a causal mask, is never memoized by its group builder), so it runs on the NPU
subgraph of ``main``: every composite call, with the values it takes from CPU ops as parameters.
Composites connected through a CPU op are not connected in that subgraph, as they must not be
merged; composites connected directly are, so the merge is the same as on the whole function.

The partitioned module is analysis: no NPU codegen exists in the TVM wheel, so it is not built.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax
from tvm.relax.dpl import pattern as dpl

from slmc.quantization.tvm_kernels import KERNEL_ATTR

PATTERN = "npu.w8a8_linear"
OFFLOADED_KERNEL = "w8a8_linear"


@dataclass
class Region:
    """One merged NPU function: its name and, per composite, the weight parameter it reads."""

    function: str
    composites: list[str]
    weights: list[str]


def _pattern(module: tvm.IRModule) -> relax.transform.FusionPattern:
    call = dpl._is_call_tir(dpl.GlobalVarPattern(), None)  # any call_tir; the check looks at the callee

    def check(context: relax.transform.PatternCheckContext) -> bool:
        callee = module[context.matched_expr.args[0]]
        return bool(callee.attrs) and str(callee.attrs.get(KERNEL_ATTR, "")) == OFFLOADED_KERNEL

    return relax.transform.FusionPattern(PATTERN, call, {}, check)


def _composite_calls(module: tvm.IRModule) -> list[relax.VarBinding]:
    calls = []
    for block in module["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar):
                callee = module[value.op]
                if isinstance(callee, relax.Function) and callee.attrs and "Composite" in callee.attrs:
                    calls.append(binding)
    return calls


def _npu_subgraph(fused: tvm.IRModule, calls: list[relax.VarBinding]) -> tuple[tvm.IRModule, dict[str, str]]:
    """``main`` reduced to its composite calls; returns the module and parameter -> original name."""
    produced = {binding.var for binding in calls}
    params: dict[relax.Var, relax.Var] = {}
    names: dict[str, str] = {}
    outputs: dict[relax.Var, relax.Var] = {}
    bindings = []
    for binding in calls:
        args = []
        for arg in binding.value.args:
            if arg in produced:
                args.append(outputs[arg])
                continue
            if arg not in params:
                params[arg] = relax.Var(f"in{len(params)}", arg.ty)
                names[f"in{len(params) - 1}"] = arg.name
            args.append(params[arg])
        out = relax.DataflowVar(binding.var.name, binding.var.ty)
        outputs[binding.var] = out
        bindings.append(relax.VarBinding(out, relax.Call(binding.value.op, args)))
    result = relax.Var("result", relax.TupleType([b.var.ty for b in bindings]))
    bindings.append(relax.VarBinding(result, relax.Tuple([b.var for b in bindings])))
    body = relax.SeqExpr([relax.DataflowBlock(bindings)], result)
    functions = {gv: f for gv, f in fused.functions.items() if gv.name_hint != "main"}
    module = tvm.IRModule(functions)
    module["main"] = relax.Function(list(params.values()), body, result.ty)
    return module, names


def partition(module: tvm.IRModule) -> tuple[tvm.IRModule, list[Region]]:
    """The merged module and its NPU regions (``Codegen`` functions), in the order ``main`` calls them."""
    fused = relax.transform.FuseOpsByPattern([_pattern(module)], bind_constants=False, annotate_codegen=False)(module)
    calls = _composite_calls(fused)
    if not calls:
        return fused, []
    subgraph, names = _npu_subgraph(fused, calls)
    merged = relax.transform.MergeCompositeFunctions()(subgraph)
    regions = []
    for block in merged["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if not (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar)):
                continue
            function = merged[value.op]
            if not (function.attrs and "Codegen" in function.attrs):
                continue
            composites = [str(f.attrs["Composite"]) for f in _inner_functions(function)]
            weights = [names[a.name] for a in value.args if isinstance(a, relax.Var) and a.name in names
                       and names[a.name].endswith("qweight")]
            regions.append(Region(value.op.name_hint, composites, weights))
    return merged, regions


def _inner_functions(function: relax.Function) -> list[relax.Function]:
    found = []
    for block in function.body.blocks:
        for binding in block.bindings:
            if isinstance(binding.value, relax.Function) and binding.value.attrs and "Composite" in binding.value.attrs:
                found.append(binding.value)
    return found
