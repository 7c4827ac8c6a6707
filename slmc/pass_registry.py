"""Deprecated alias of ``slmc.spec.pass_registry`` (moved by issue 15): importing it warns; removed in the next release."""

from slmc import alias_deprecated_module

alias_deprecated_module(__name__, "slmc.spec.pass_registry")
