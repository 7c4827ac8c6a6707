"""The quantize pass's choices as registries (like torchao's ``register_quantize_module_handler``):

- ``register_method(name, calibrated=...)``: how a weight-only layer's codes are chosen (``rtn``, ``gptq``,
  ``awq``), one function ``(weight, format, statistics, config) -> MethodResult`` per recipe ``method``;
- ``register_scheme(name)``: how the layers of one recipe ``scheme`` (``weight_only``, ``w8a8``) are
  quantized and replaced, one function ``(graph, plans, config, context) -> layer reports`` per scheme.

Registering a name twice raises ``DuplicateHandlerError``; asking for an unregistered one raises
``UnknownHandlerError`` listing the registered names. Both are programming errors: the recipe's
``method`` and ``scheme`` are validated against the same names (``passes/quantize.py``'s ``Method`` and
``Scheme``; a test keeps them equal).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import torch

from slmc.graph.activations import InputStatistics
from slmc.quantization.awq import AwqSettings, awq_quantize
from slmc.quantization.formats import QuantFormat, QuantizedWeight, quantize_rtn
from slmc.quantization.gptq import GptqSettings, gptq_quantize

if TYPE_CHECKING:
    from slmc.passes.quantize import QuantizeConfig

Handler = TypeVar("Handler")


class DuplicateHandlerError(ValueError):
    """Two handlers were registered under one name (a programming error, not a user error)."""


class UnknownHandlerError(ValueError):
    """No handler is registered under a name; the message lists the registered ones."""


class HandlerRegistry(Generic[Handler]):
    """Handlers by name, in registration order. ``what`` names the choice in error messages."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._handlers: dict[str, Handler] = {}

    def add(self, name: str, handler: Handler) -> None:
        if name in self._handlers:
            raise DuplicateHandlerError(f"{self.what} '{name}' is already registered")
        self._handlers[name] = handler

    def get(self, name: str) -> Handler:
        if name not in self._handlers:
            raise UnknownHandlerError(f"no {self.what} '{name}' is registered; registered: {', '.join(self._handlers)}")
        return self._handlers[name]

    def names(self) -> list[str]:
        return list(self._handlers)


@dataclass(frozen=True)
class MethodResult:
    """What a weight-only method chose for one layer: the codes, an optional per-input-channel scale
    the kernel multiplies the input by (AWQ), and numbers for the layer's report."""

    quantized: QuantizedWeight
    input_scale: torch.Tensor | None = None
    report: dict[str, Any] = field(default_factory=dict)


MethodFunction = Callable[[torch.Tensor, QuantFormat, "InputStatistics | None", "QuantizeConfig"], MethodResult]


@dataclass(frozen=True)
class WeightOnlyMethod:
    """A registered weight-only method. ``calibrated``: it needs the layer's input statistics
    (Hessian, mean |x|), collected layer by layer on calibration data; without them the layer is
    quantized by ``rtn``."""

    name: str
    calibrated: bool
    run: MethodFunction


METHODS: HandlerRegistry[WeightOnlyMethod] = HandlerRegistry("weight-only quantization method")
SchemeFunction = Callable[..., list[dict[str, Any]]]
SCHEMES: HandlerRegistry[SchemeFunction] = HandlerRegistry("quantization scheme")


def register_method(name: str, *, calibrated: bool) -> Callable[[MethodFunction], MethodFunction]:
    """Register ``run`` as the weight-only method ``name`` (the recipe's ``method: name``)."""

    def decorate(run: MethodFunction) -> MethodFunction:
        METHODS.add(name, WeightOnlyMethod(name, calibrated, run))
        return run

    return decorate


def register_scheme(name: str) -> Callable[[SchemeFunction], SchemeFunction]:
    """Register ``run(graph, plans, config, context) -> layer reports`` as the scheme ``name``."""

    def decorate(run: SchemeFunction) -> SchemeFunction:
        SCHEMES.add(name, run)
        return run

    return decorate


def calibrated_methods(names: set[str]) -> list[str]:
    """Those of ``names`` whose method needs calibration data, sorted."""
    return sorted(name for name in names if METHODS.get(name).calibrated)


@register_method("rtn", calibrated=False)
def rtn(w: torch.Tensor, fmt: QuantFormat, stats: InputStatistics | None, config: QuantizeConfig) -> MethodResult:
    """Round to nearest with per-group min-max ranges."""
    return MethodResult(quantize_rtn(w, fmt))


@register_method("gptq", calibrated=True)
def gptq(w: torch.Tensor, fmt: QuantFormat, stats: InputStatistics | None, config: QuantizeConfig) -> MethodResult:
    """GPTQ (Frantar et al., 2022) on the layer's input Hessian. Precondition: ``stats`` with a Hessian."""
    g = config.gptq
    quantized, loss = gptq_quantize(w, stats.hessian, fmt, GptqSettings(g.damp, g.block_size, g.act_order))
    return MethodResult(quantized, report={"gptq_loss": loss})


@register_method("awq", calibrated=True)
def awq(w: torch.Tensor, fmt: QuantFormat, stats: InputStatistics | None, config: QuantizeConfig) -> MethodResult:
    """AWQ (Lin et al., 2023): activation-aware channel scaling + clip search. Precondition: ``stats``."""
    a = config.awq
    quantized, input_scale, alpha, _ = awq_quantize(w, stats.abs_mean, stats.hessian, fmt,
                                                    AwqSettings(a.grid, a.clip_search, a.max_shrink))
    return MethodResult(quantized, input_scale, {"awq_alpha": alpha})
