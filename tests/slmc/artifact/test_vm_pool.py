"""``release_vm_pool`` frees the buffers TVM's pooled allocators keep (slmc.artifact.vm_pool). Its use after a
prompt, with the same logits, is tested on a compiled artifact in test_resident_cache.py."""

from __future__ import annotations

from slmc.artifact.tvm_runtime import cpu, tvm_ffi
from slmc.artifact.vm_pool import CLEAR_POOL, release_vm_pool


def test_tvms_runtime_registers_the_pool_clear_and_it_runs_between_calls():
    cpu()  # loads TVM's runtime library, which registers the VM's builtins
    assert CLEAR_POOL in tvm_ffi().registry.list_global_func_names()
    release_vm_pool()
    release_vm_pool()  # an empty pool: nothing to free, no error
