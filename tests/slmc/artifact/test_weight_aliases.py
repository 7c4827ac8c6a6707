"""Identical weights are found so that the weights file stores them once (slmc.artifact.weight_aliases)."""

from __future__ import annotations

import numpy as np

from slmc.artifact.weight_aliases import PREFIX_BYTES, identical_tensors


def test_identical_tensors_map_to_the_first_of_them():
    table = np.arange(12, dtype=np.float32).reshape(3, 4)
    tensors = {"embed": table, "other": table + 1, "head": table.copy(), "head2": table.copy()}
    assert identical_tensors(tensors) == {"head": "embed", "head2": "embed"}


def test_equal_values_of_another_dtype_shape_or_layout_are_not_identical():
    table = np.arange(12, dtype=np.float32).reshape(3, 4)
    tensors = {"a": table, "as_int": table.astype(np.int32), "reshaped": table.reshape(4, 3), "transposed": table.T.copy(),
               "float64": table.astype(np.float64)}
    assert identical_tensors(tensors) == {}


def test_bytes_are_compared_in_full_not_only_their_prefix():
    a = np.zeros(PREFIX_BYTES, dtype=np.float32)  # 4 x PREFIX_BYTES bytes: the difference lies past the prefix
    b = a.copy()
    b[-1] = 1.0
    assert identical_tensors({"a": a, "b": b}) == {}
    assert identical_tensors({"a": a, "b": a.copy()}) == {"b": "a"}


def test_nan_is_compared_by_its_bits():
    a = np.array([np.nan, 1.0], dtype=np.float32)
    assert identical_tensors({"a": a, "b": a.copy()}) == {"b": "a"}
