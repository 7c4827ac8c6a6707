"""Where a Relax VM function's runtime calls come from: a static census of the module TVM's VM codegen receives.

Builds the ``decode_step_profile.py`` model (a ``--layers``-layer Llama of SmolLM-135M's width with
``--recipe``) and records the IRModule ``relax.build`` hands to its VM codegen (after slmc's pipeline:
``StaticPlanBlockMemory``, ``KillAfterLastUse``, ``VMShapeLower``, ...). For ``--function`` (default
``resident_step``, the one-token decode step) it counts the bindings by what each becomes at run time:

- ``kernel``: a call of a PrimFunc of the module (bytecode: a VM ``Call``; compiled mode: a direct
  ``call_cpacked``), and ``packed <name>``: a call of a registered function by name;
- ``builtin <name>``: ``R.call_builtin_with_ctx`` (``vm.builtin.reshape``, ``match_shape``, ...);
- ``kill_object``: ``R.vm.kill_object`` (both modes: a ``vm.builtin.null_value`` call writing the register;
  written by ``KillAfterLastUse`` after each object's last use), ``alloc_tensor``/``alloc_storage``;
- ``null_value`` (the op: bytecode calls ``vm.builtin.null_value``; compiled mode writes a null handle, no call),
  ``tuple`` (``vm.builtin.make_tuple``), ``tuple_getitem``, ``var alias`` (compiled mode: ``vm.builtin.copy``).

The function is straight-line (no ``If``), so the static count is the per-call count. TVM 0.27's
compiled mode (``relax.build(..., exec_mode="compiled")``) runs no instrument, so
``decode_step_profile.py`` cannot count its calls; this census counts both modes from the same module.

    python benchmarks/vm_call_census.py --layers 4 --recipe examples/recipes/bench/w4a8-g32-a32-rtn-kv-f16.yaml
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import tvm
from tvm import relax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode_step_profile import build_artifact  # noqa: E402


def census(function: relax.Function, module: tvm.IRModule) -> Counter:
    """The bindings of ``function`` counted by the runtime call each becomes (module docstring)."""
    counts: Counter = Counter()
    prim_funcs = {gv for gv, f in module.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    kinds = {"relax.vm.kill_object": "kill_object", "relax.vm.alloc_tensor": "alloc_tensor",
             "relax.vm.alloc_storage": "alloc_storage", "relax.null_value": "null_value"}
    for block in function.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Var):
                counts["var alias"] += 1
            elif isinstance(value, relax.Tuple):
                counts["tuple"] += 1
            elif isinstance(value, relax.TupleGetItem):
                counts["tuple_getitem"] += 1
            elif isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
                if value.op.name == "relax.call_builtin_with_ctx":
                    counts[f"builtin {value.args[0].global_symbol}"] += 1
                else:
                    counts[kinds.get(value.op.name, f"op {value.op.name}")] += 1
            elif isinstance(value, relax.Call) and isinstance(value.op, relax.GlobalVar):
                counts["kernel" if value.op in prim_funcs else f"call {value.op.name_hint}"] += 1
            elif isinstance(value, relax.Call) and isinstance(value.op, relax.ExternFunc):
                counts[f"packed {value.op.global_symbol}"] += 1
            else:
                counts[f"other {type(value).__name__}"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--recipe", type=Path)
    parser.add_argument("--max-context", type=int, default=512)
    parser.add_argument("--work", default="/tmp/slmc-vm-census")
    parser.add_argument("--function", default="resident_step")
    args = parser.parse_args()

    # the captured module, for a second look without a build: named as build_artifact names the artifact it comes from
    # (layers, context, recipe), so another --recipe or --max-context never reads a stale capture
    stem = args.recipe.stem if args.recipe else "int4-g32-rtn"
    saved = Path(args.work) / f"vm-codegen-input-L{args.layers}-C{args.max_context}-{stem}.json"
    seen: list[tvm.IRModule] = [tvm.ir.load_json(saved.read_text())] if saved.is_file() else []
    codegen = relax.vm_build._vmcodegen

    def recording(builder, mod, exec_mode="bytecode"):
        seen.append(mod)
        return codegen(builder, mod, exec_mode)

    if not seen:
        relax.vm_build._vmcodegen = recording
        try:
            build_artifact(args.layers, args.max_context, Path(args.work), args.recipe)
        finally:
            relax.vm_build._vmcodegen = codegen
    if not seen:
        sys.exit(f"nothing was built: {args.work} already holds the artifact (use an empty --work)")
    module = next((m for m in seen if any(gv.name_hint == args.function for gv in m.functions)), None)
    if module is None:
        sys.exit(f"no module built has a function '{args.function}'")
    counts = census(module[args.function], module)
    print(f"{args.function} ({args.layers} layers): {sum(counts.values())} bindings")
    for name, count in counts.most_common():
        print(f"  {count:6d}  {name}")
    saved.write_text(tvm.ir.save_json(module))


if __name__ == "__main__":
    main()
