"""The runtimes ``slmc bench`` compares: a registry of engines, each prepared once and timed in fresh processes.

An engine has ``prepare(Preparation) -> info`` (runs once per model, in the preparation process: compile,
export, quantize, convert; ``EngineUnavailable`` when it cannot run here, with the reason) and
``open(info, ThreadPolicy) -> Timer`` (runs in each measuring process, ``slmc.bench.timing``). The
modules are imported only when an engine is used (llama.cpp and ONNX Runtime load native libraries).

==================  ===========================================================================
``slmc``            the slmc artifact of the run's recipe, Python runtime (``slmc.load``)
``slmc-native``     the same artifact packaged for the host and run by the C++ runner ``slmc-run``
``torch``           PyTorch eager, fp32
``ort-fp32``        ONNX Runtime, the ONNX export of the model
``ort-int8``        ONNX Runtime, ``quantize_dynamic`` int8 of that export
``ort-int4``        ONNX Runtime, ``MatMulNBits`` 4-bit, block 32, of that export
``llama-cpp-q4_0``  llama.cpp, the model's tensors as GGUF Q4_0 (the baseline of issue 22's goals)
``llama-cpp-q8_0``  llama.cpp, GGUF Q8_0
==================  ===========================================================================

An entry of ``--engines`` may end in a thread override, ``slmc@1t``: that engine once more, on that many threads
whatever the run's thread policy (issue 22: decode on two threads must beat one, judged within one run).
The slmc engines compile a recipe (``per_recipe``): a run with several recipes measures one instance of
each per recipe, named ``slmc[<label>]`` (``instance_name``; the label is the recipe file's stem), every
instance in processes of its own like any engine. A run's only recipe keeps the plain names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from slmc.errors import InputError, did_you_mean


@dataclass(frozen=True)
class EngineKind:
    name: str
    module: str  # under slmc.bench
    prepare_name: str
    open_name: str
    per_recipe: bool = False  # compiles the run's recipe: one instance per recipe
    footprint_name: str | None = None  # issue 22's load + 64 steps peak RSS (slmc.bench.footprint); None: not measured
    # the footprint's module under slmc.bench when not ``module``: one importing no more than a user's process would
    footprint_module: str | None = None

    def prepare(self, prep: Any) -> dict[str, Any]:
        return getattr(importlib.import_module(f"slmc.bench.{self.module}"), self.prepare_name)(prep)

    def open(self, info: dict[str, Any], policy: Any) -> Any:
        return getattr(importlib.import_module(f"slmc.bench.{self.module}"), self.open_name)(info, policy)

    def footprint(self, info: dict[str, Any], policy: Any, prompt: int, steps: int) -> dict[str, Any]:
        if self.footprint_name is None:
            raise InputError(f"engine {self.name} has no footprint measurement (slmc.bench.footprint)")
        module = importlib.import_module(f"slmc.bench.{self.footprint_module or self.module}")
        return getattr(module, self.footprint_name)(info, policy, prompt, steps)


ENGINE_KINDS = {e.name: e for e in (
    EngineKind("slmc", "engine_slmc", "prepare", "open_timer", per_recipe=True, footprint_name="footprint",
               footprint_module="footprint_slmc"),
    EngineKind("slmc-native", "engine_slmc", "prepare_native", "open_native", per_recipe=True,
               footprint_name="footprint_native"),
    EngineKind("torch", "engine_torch", "prepare", "open_timer"),
    EngineKind("ort-fp32", "engine_ort", "prepare_fp32", "open_timer"),
    EngineKind("ort-int8", "engine_ort", "prepare_int8", "open_timer"),
    EngineKind("ort-int4", "engine_ort", "prepare_int4", "open_timer"),
    EngineKind("llama-cpp-q4_0", "engine_llama_cpp", "prepare_q4_0", "open_timer"),
    EngineKind("llama-cpp-q8_0", "engine_llama_cpp", "prepare_q8_0", "open_timer"),
)}
ENGINES = tuple(ENGINE_KINDS)


def engine(name: str) -> EngineKind:
    if name not in ENGINE_KINDS:
        raise InputError(f"unknown engine {name!r}; known: {', '.join(ENGINES)}{did_you_mean(name, ENGINES)}")
    return ENGINE_KINDS[name]


def parse_engine(text: str) -> tuple[str, int | None]:
    """``(kind, threads)`` of an ``--engines`` entry: ``slmc`` -> ``("slmc", None)`` (the run's thread policy),
    ``slmc@1t`` -> ``("slmc", 1)`` (this instance on one thread, whatever the policy: ``ThreadPolicy.with_threads``)."""
    kind, at, threads = text.partition("@")
    engine(kind)
    if not at:
        return kind, None
    if not (threads.endswith("t") and threads[:-1].isdigit() and int(threads[:-1]) >= 1):
        raise InputError(f"engine {text!r}: a thread override is '@<threads>t' with at least one thread, e.g. '{kind}@1t'")
    return kind, int(threads[:-1])


def instance_name(engine_name: str, label: str, threads: int | None = None) -> str:
    """``slmc`` for the run's only recipe (label ``""``), ``slmc[w4a8-g32-rtn]`` for one of several; ``@1t`` after
    it for an instance with a thread override."""
    return (f"{engine_name}[{label}]" if label else engine_name) + (f"@{threads}t" if threads else "")


@dataclass(frozen=True)
class Instance:
    """One measured engine of a run: ``name`` in the report, ``kind`` in ``ENGINE_KINDS``, ``label`` the recipe it
    compiles (``""``: the run's only recipe, or an engine that compiles none), ``threads`` its thread override
    (``None``: the run's policy). Instances of one kind and label share their prepared files."""
    name: str
    kind: str
    label: str
    threads: int | None = None


def instances(engines: list[str], labels: list[str]) -> list[Instance]:
    """Every engine of ``engines`` (``parse_engine``), those that compile a recipe once per label of ``labels`` (in
    that order)."""
    parsed = [parse_engine(e) for e in engines]
    return [Instance(instance_name(kind, label, threads), kind, label, threads)
            for kind, threads in parsed for label in (labels if engine(kind).per_recipe else [""])]
