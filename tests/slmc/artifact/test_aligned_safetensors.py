"""weights.safetensors as the native runtime maps it: 64-byte aligned, still read by safetensors."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file

from slmc.artifact.aligned_safetensors import PAD_PREFIX, save_aligned


def test_every_tensor_starts_on_64_bytes_and_loads_back(tmp_path):
    tensors = {"a": np.arange(10, dtype=np.float32), "b": np.ones((3, 5), np.int8), "c": np.arange(7, dtype=np.int64),
               "d": np.zeros((0,), np.float16), "e": np.full((2, 2), 3.5, np.float64),
               "scalar": np.array(8.0, np.float32), "transposed": np.arange(6, dtype=np.float32).reshape(2, 3).T}
    path = tmp_path / "w.safetensors"
    save_aligned(tensors, path)
    with path.open("rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    assert (8 + n) % 64 == 0
    assert all(header[name]["data_offsets"][0] % 64 == 0 for name in tensors)
    loaded = load_file(str(path))
    assert {k for k in loaded if not k.startswith(PAD_PREFIX)} == set(tensors)
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape  # 0-d stays 0-d (Gemma's scale)
        assert np.array_equal(loaded[name], array)


def test_reserved_names_and_unknown_dtypes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="reserved prefix"):
        save_aligned({PAD_PREFIX + "0": np.zeros(1, np.uint8)}, tmp_path / "w.safetensors")
    with pytest.raises(TypeError, match="tensor 'x': dtype complex64"):
        save_aligned({"x": np.zeros(2, np.complex64)}, tmp_path / "w.safetensors")
