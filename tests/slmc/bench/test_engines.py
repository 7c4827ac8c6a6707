"""`slmc bench` engine instances: the slmc engines once per recipe, named by the recipe's label; the rest once."""

from __future__ import annotations

import pytest

from slmc.bench.engines import Instance, instance_name, instances, parse_engine
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


def test_a_thread_override_is_one_more_instance_of_the_same_kind_and_recipe():
    assert parse_engine("slmc@1t") == ("slmc", 1) and parse_engine("llama-cpp-q4_0") == ("llama-cpp-q4_0", None)
    got = instances(["slmc", "slmc@1t", "torch@2t"], ["a", "b"])
    assert [i.name for i in got] == ["slmc[a]", "slmc[b]", "slmc[a]@1t", "slmc[b]@1t", "torch@2t"]
    assert got[2] == Instance("slmc[a]@1t", "slmc", "a", 1)


@pytest.mark.parametrize("text, message", [("slmc@0t", "at least one thread"), ("slmc@two", "'@<threads>t'"),
                                           ("slcm@1t", "did you mean 'slmc'")])
def test_bad_thread_overrides_are_input_errors(text, message):
    with pytest.raises(InputError, match=message):
        parse_engine(text)
