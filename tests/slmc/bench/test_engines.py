"""`slmc bench` engine instances: the slmc engines once per recipe, named by the recipe's label; the rest once."""

from __future__ import annotations

import pytest

from slmc.bench.engines import Instance, instance_name, instances
from slmc.errors import InputError


def test_the_only_recipe_keeps_the_plain_names():
    assert instances(["slmc", "slmc-native", "torch"], [""]) == [
        Instance("slmc", "slmc", ""), Instance("slmc-native", "slmc-native", ""), Instance("torch", "torch", "")]


def test_several_recipes_give_one_slmc_instance_each_named_by_label():
    got = instances(["slmc", "torch", "slmc-native"], ["int4-g32-rtn", "w4a8-g32-rtn"])
    assert [i.name for i in got] == ["slmc[int4-g32-rtn]", "slmc[w4a8-g32-rtn]", "torch",
                                     "slmc-native[int4-g32-rtn]", "slmc-native[w4a8-g32-rtn]"]
    assert got[1] == Instance("slmc[w4a8-g32-rtn]", "slmc", "w4a8-g32-rtn") and got[2].label == ""
    assert instance_name("slmc", "") == "slmc"


def test_unknown_engine_is_an_input_error():
    with pytest.raises(InputError, match="unknown engine 'tflite'"):
        instances(["tflite"], [""])
