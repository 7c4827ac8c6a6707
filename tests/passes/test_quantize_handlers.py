"""The quantize pass's method and scheme registries (passes/_quantize_handlers.py)."""

from __future__ import annotations

from typing import get_args

import pytest

from slmc.passes._quantize_handlers import (METHODS, SCHEMES, DuplicateHandlerError, HandlerRegistry, UnknownHandlerError,
                                            calibrated_methods, register_method, register_scheme)
from slmc.passes.quantize import Method, QuantizeConfig, Scheme


def test_every_recipe_method_and_scheme_has_exactly_one_handler():
    assert METHODS.names() == list(get_args(Method))
    assert SCHEMES.names() == list(get_args(Scheme))


def test_registering_a_method_or_scheme_twice_raises():
    with pytest.raises(DuplicateHandlerError, match="weight-only quantization method 'gptq' is already registered"):
        register_method("gptq", calibrated=True)(lambda w, fmt, stats, config: None)
    with pytest.raises(DuplicateHandlerError, match="quantization scheme 'w8a8' is already registered"):
        register_scheme("w8a8")(lambda graph, plans, config, context: [])
    assert METHODS.get("gptq").run.__name__ == "gptq"


def test_an_unknown_name_lists_the_registered_ones():
    with pytest.raises(UnknownHandlerError, match="no weight-only quantization method 'hqq' is registered; registered: rtn, gptq, awq"):
        METHODS.get("hqq")
    registry: HandlerRegistry[int] = HandlerRegistry("thing")
    with pytest.raises(UnknownHandlerError, match="registered: $"):
        registry.get("x")


def test_calibration_need_comes_from_the_registered_methods():
    assert calibrated_methods({"rtn", "gptq", "awq"}) == ["awq", "gptq"]
    assert QuantizeConfig(method="awq").needs_calibration() == "method awq needs calibration data"
    assert QuantizeConfig().needs_calibration() is None
