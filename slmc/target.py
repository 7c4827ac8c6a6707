"""Deprecated alias of ``slmc.spec.target`` (moved by issue 15): importing it warns; removed in the next release."""

from slmc import alias_deprecated_module

alias_deprecated_module(__name__, "slmc.spec.target")
