"""The pass-author modules that moved into subpackages (issue 15) keep working for one release:
``slmc.ir``, ``slmc.pass_registry``, ``slmc.target``, ``slmc.linears``, ``slmc.activations``."""

from __future__ import annotations

import importlib
import sys

import pytest

MOVED = {
    "slmc.ir": ("slmc.graph.ir", "Graph"),
    "slmc.pass_registry": ("slmc.spec.pass_registry", "register_pass"),
    "slmc.target": ("slmc.spec.target", "TargetDescriptor"),
    "slmc.linears": ("slmc.graph.linears", "selected_layers"),
    "slmc.activations": ("slmc.graph.activations", "linear_input_statistics"),
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_moved_module_warns_naming_its_new_path_and_reexports_its_public_names(old, monkeypatch):
    new, name = MOVED[old]
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated .* import {new} instead") as caught:
        __import__(old)  # as an ``import`` statement would (importlib.import_module adds a frame)
    alias = sys.modules[old]
    assert caught[0].filename == __file__  # the warning points at the importing line
    module = importlib.import_module(new)
    assert getattr(alias, name) is getattr(module, name)
    public = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    assert set(alias.__all__) == set(public)
    assert all(getattr(alias, n) is getattr(module, n) for n in public)


def test_slmc_keeps_at_most_ten_top_level_modules():
    from pathlib import Path

    top = sorted(p.name for p in Path(__file__).resolve().parents[2].joinpath("slmc").glob("*.py"))
    assert len(top) <= 10, top
