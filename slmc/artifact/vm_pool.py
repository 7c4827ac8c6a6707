"""Give a prompt's intermediates back once it is cached (issue 22.3).

The Relax VM allocates a call's intermediates from TVM's pooled allocator (``tvm_runtime.load_vm``:
``POOLED_ALLOCATOR``), which keeps every buffer a call freed, keyed by its size, for the next call of the same
sizes. A prompt's call (``resident_all``/``resident_last`` over T tokens, planned for up to ``PREFILL_CHUNK``)
and a decode step's (``resident_step``, one token on static shapes) never ask for the same sizes, so after the
prompt its buffers stay resident beside the step's for the whole generation: ~0.9 MiB of the Qwen2.5-0.5B
footprint row, whose allowance is 60 MiB (docs/dev-notes.md session 13). ``vm.builtin.memory_manager.clear``
(TVM's ``MemoryManager::Clear``: every pooled allocator frees the buffers of its free list; buffers in use are
not on that list; MLC-LLM calls it when it unloads a model) releases them; ``malloc_trim`` then returns the
C heap's free pages (``slmc.artifact.heap_trim``).

The cost: the next prompt allocates its buffers again (page faults on a few MB, against a prefill of
milliseconds to seconds). The pool is the process's, shared by every loaded model: another model's next call
re-allocates too, and gets the same results.
"""

from __future__ import annotations

from slmc.artifact.heap_trim import release_free_heap
from slmc.artifact.tvm_runtime import tvm_ffi

CLEAR_POOL = "vm.builtin.memory_manager.clear"


def release_vm_pool() -> None:
    """Free the buffers TVM's pooled allocators keep for reuse, then trim the C heap.

    Precondition: TVM's runtime library is loaded (a VM was built: ``tvm_runtime.load_vm``), which registers
    ``CLEAR_POOL``. Safe between calls at any time: no buffer a call or a returned tensor holds is freed."""
    tvm_ffi().get_global_func(CLEAR_POOL)()
    release_free_heap()
