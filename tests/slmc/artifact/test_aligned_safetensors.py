"""weights.safetensors as the runtimes map it: 64-byte aligned, still read by safetensors, mapped back as views."""

from __future__ import annotations

import json
import mmap
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file

from slmc.artifact.aligned_safetensors import PAD_PREFIX, map_tensors, save_aligned
from slmc.errors import ArtifactError


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


def _maps_the_file(array):
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base, mmap.mmap)


def test_mapped_tensors_are_aligned_writeable_views_of_one_private_mapping(tmp_path):
    tensors = {"a": np.arange(10, dtype=np.float32), "b": np.ones((3, 5), np.int8), "d": np.zeros((0, 4), np.float16),
               "e": np.full((2, 2), 3.5, np.float64)}
    path = tmp_path / "w.safetensors"
    save_aligned(tensors, path)
    mapped = map_tensors(path, ["e", "a", "b", "d"])
    assert list(mapped) == ["e", "a", "b", "d"]
    for name, array in tensors.items():
        view = mapped[name]
        assert view.dtype == array.dtype and view.shape == array.shape and np.array_equal(view, array)
        assert view.size == 0 or _maps_the_file(view)  # a view of the mapping, no copy
        assert view.flags.writeable and (view.size == 0 or view.ctypes.data % 64 == 0)
    mapped["a"][0] = 99.0  # copy-on-write: the file is never changed
    assert map_tensors(path, ["a"])["a"][0] == 0.0


def test_mapping_a_missing_or_malformed_tensor_names_file_and_tensor(tmp_path):
    path = tmp_path / "w.safetensors"
    save_aligned({"a": np.arange(4, dtype=np.float32)}, path)
    with pytest.raises(ArtifactError, match=r"w.safetensors: tensor 'b' \(named in the manifest's weights\) is missing"):
        map_tensors(path, ["b"])
    raw = bytearray(path.read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    header = raw[8:8 + n].replace(b'"data_offsets":[0,16]', b'"data_offsets":[0,32]')
    path.write_bytes(bytes(raw[:8]) + bytes(header) + bytes(raw[8 + n:]))
    with pytest.raises(ArtifactError, match=r"tensor 'a': data_offsets \[0, 32\) do not hold its 16 bytes"):
        map_tensors(path, ["a"])
    path.write_bytes(b"\x01")
    with pytest.raises(ArtifactError, match="too short for a safetensors file"):
        map_tensors(path, ["a"])
