"""``CompiledModel`` hands arrays to and from the VM without copies where TVM allows (slmc.artifact.runtime)."""

from __future__ import annotations

import numpy as np

import slmc
from slmc.artifact.tvm_runtime import TVM_ALIGNMENT


def _step_twice(model, ids):
    keys, values = model.kv_cache.empty()
    logits, keys, values = model.step(ids, keys, values)
    return logits, model.step(ids[:, :1], keys, values)


def test_the_copy_contract_step_gives_the_same_results_for_aligned_unaligned_and_read_only_caches(cached_compile):
    model = slmc.load(cached_compile.artifact)
    assert model.resident  # step() copies the cache into the resident one and out again (slmc.artifact.resident_cache)
    ids = np.arange(5, dtype=np.int64).reshape(1, 5)
    _, (logits, keys, values) = _step_twice(model, ids)
    assert keys.flags.writeable and keys.shape[3] == 7
    # an unaligned copy of the same cache takes the copying path: the results are identical
    unaligned = np.empty(keys.size + 1, keys.dtype)[1:].reshape(keys.shape)
    unaligned[...] = keys
    assert unaligned.ctypes.data % TVM_ALIGNMENT
    shared = model.step(ids[:, :1], keys, values)
    copied = model.step(ids[:, :1], unaligned, values.copy())
    for a, b in zip(shared, copied):
        np.testing.assert_array_equal(a, b)
    read_only = keys.copy()
    read_only.flags.writeable = False
    np.testing.assert_array_equal(model.step(ids[:, :1], read_only, values)[0], shared[0])


def test_tensors_of_an_rpc_session_are_copied_not_viewed():
    import tvm
    from tvm import rpc

    from slmc.artifact.runtime import _as_numpy, _as_tensor

    server = rpc.Server(host="127.0.0.1", port=9190, port_end=9290)
    try:
        device = rpc.connect("127.0.0.1", server.port).cpu(0)
        remote = _as_tensor(np.arange(64, dtype=np.float32), device)  # aligned, but remote: copied there
        assert remote.device.dlpack_device_type() != 1
        np.testing.assert_array_equal(_as_numpy(remote), np.arange(64, dtype=np.float32))
        assert _as_numpy(tvm.runtime.tensor(np.ones(3, np.float32))).ctypes.data % TVM_ALIGNMENT == 0
    finally:
        server.terminate()
