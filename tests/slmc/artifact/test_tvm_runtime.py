"""Generating with ``slmc.load`` needs neither torch nor TVM's compiler library (slmc.artifact.tvm_runtime)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

GENERATE = """
import json, sys
import slmc
model = slmc.load(sys.argv[1])
text = model.generate("hello", max_new_tokens=8)
libraries = sorted({line.split()[-1].rsplit("/", 1)[-1] for line in open("/proc/self/maps") if "libtvm" in line})
unneeded = [name for name in ("ml_dtypes", "yaml", "slmc.spec.recipe") if name in sys.modules]
print(json.dumps({"text": text, "torch": "torch" in sys.modules, "tvm": "tvm" in sys.modules, "libraries": libraries,
                  "unneeded": unneeded}))
"""


def test_load_and_generate_import_neither_torch_nor_tvm_and_load_only_the_runtime_library(cached_compile):
    done = subprocess.run([sys.executable, "-c", GENERATE, str(cached_compile.artifact)], capture_output=True, text=True,
                          check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert not seen["torch"] and not seen["tvm"], seen
    assert "libtvm_runtime.so" in seen["libraries"] and "libtvm_compiler.so" not in seen["libraries"], seen
    # issue 22.3: ml_dtypes (hidden from tvm_ffi, ~7 MB), PyYAML and the recipe schema are not the runtime's
    assert seen["unneeded"] == [], seen
    import slmc

    assert seen["text"] == slmc.load(cached_compile.artifact).generate("hello", max_new_tokens=8)


@pytest.mark.slow  # a second tiny-lm compile (in a subprocess)
def test_the_compiler_still_loads_after_a_lean_load_in_the_same_process(cached_compile, tmp_path):
    """A process that loads an artifact first (torch hidden from tvm_ffi) and then compiles."""
    script = (
        "import sys, slmc\n"
        "model = slmc.load(sys.argv[1])\n"
        "import torch, tvm\n"
        "result = slmc.compile('tiny-lm', sys.argv[2], 'host', sys.argv[3])\n"
        "print(result.verification.passed)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(cached_compile.artifact), str(cached_compile.recipe),
                           str(tmp_path / "again")], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "True", done.stderr[-3000:]


def test_local_tensors_are_views_when_aligned_and_aligned_copies_otherwise():
    from slmc.artifact.tvm_runtime import TVM_ALIGNMENT, aligned_empty, as_local_tensor

    aligned = aligned_empty((4, 16), np.float32)
    aligned[...] = 1.5
    assert np.from_dlpack(as_local_tensor(aligned)).ctypes.data == aligned.ctypes.data
    unaligned = np.empty(65, np.float32)[1:].reshape(4, 16)
    unaligned[...] = 2.5
    copied = np.from_dlpack(as_local_tensor(unaligned))
    assert copied.ctypes.data != unaligned.ctypes.data and copied.ctypes.data % TVM_ALIGNMENT == 0
    np.testing.assert_array_equal(copied, unaligned)
    empty = np.from_dlpack(as_local_tensor(np.zeros((0, 3), np.int64)))
    assert empty.shape == (0, 3) and empty.dtype == np.int64


THREADS = """
import json, os, subprocess, sys, threading
import slmc
from slmc.artifact.tvm_runtime import physical_cores, tvm_threads
model = slmc.load(sys.argv[1])
model.generate("hello", max_new_tokens=2)
other = {}
def run():
    model.generate("hi", max_new_tokens=2)
    other["threads"] = tvm_threads()
worker = threading.Thread(target=run)
worker.start()
worker.join()
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('TVM_NUM_THREADS'))"], capture_output=True,
                       text=True, check=True).stdout.strip()
print(json.dumps({"threads": tvm_threads(), "other_thread": other["threads"], "physical": physical_cores(),
                  "env": os.environ.get("TVM_NUM_THREADS"), "child": child}))
"""


@pytest.mark.parametrize("user", [None, "1"])
def test_the_runtime_sizes_tvms_pool_without_leaking_tvm_num_threads_to_children(cached_compile, user):
    """One TVM thread per physical core in every thread that runs the model, chosen through TVM's
    runtime.config_threadpool: the environment (and so a child process's) stays as the user gave it; a
    user's TVM_NUM_THREADS is obeyed."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    if user:
        env["TVM_NUM_THREADS"] = user
    done = subprocess.run([sys.executable, "-c", THREADS, str(cached_compile.artifact)], capture_output=True, text=True,
                          env=env, check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    expected = int(user) if user else seen["physical"]
    assert seen["threads"] == seen["other_thread"] == expected, seen
    assert seen["env"] == user and seen["child"] == (user or "None"), seen


def _topology(root, siblings: list[str]):
    """A sysfs CPU folder (``cpuN/topology/thread_siblings_list``) with the given sibling lists."""
    for cpu, listed in enumerate(siblings):
        (root / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (root / f"cpu{cpu}" / "topology" / "thread_siblings_list").write_text(listed + "\n")
    return root


def test_physical_cores_count_each_core_once_whatever_threads_of_it_the_mask_holds(tmp_path):
    """Two 2-way SMT cores: one thread of each is two cores (the mask TVM's pool gives the thread that starts it,
    inherited by the threads it starts; ``len(mask) / cpu0's siblings`` made it one), both threads of one core one."""
    from slmc.artifact.tvm_runtime import physical_cores

    apart = _topology(tmp_path / "apart", ["0,2", "1,3", "0,2", "1,3"])  # siblings n and n + cores (Intel's numbering)
    assert physical_cores({0, 1, 2, 3}, apart) == 2 and physical_cores({0, 1}, apart) == 2
    assert physical_cores({0, 2}, apart) == 1 and physical_cores({3}, apart) == 1
    adjacent = _topology(tmp_path / "adjacent", ["0-1", "0-1", "2-3", "2-3"])
    assert physical_cores({0, 2}, adjacent) == 2 and physical_cores({0, 1}, adjacent) == 1
    assert physical_cores({0, 5}, adjacent) == 2  # a CPU the folder does not list: a core of its own


POOL = """
import ctypes, json
from slmc.artifact.tvm_runtime import set_pool_threads, tvm_ffi, tvm_threads
pool = tvm_threads()  # the runtime library loaded, this thread's pool on the physical cores (its workers from now on)
# TVM 0.27's threading::MaxConcurrency (exported by libtvm_runtime.so, loaded RTLD_GLOBAL): 1 runs every parallel
# kernel inline on the calling thread (TVMBackendParallelLaunch), whatever runtime.NumThreads reports
max_concurrency = getattr(ctypes.CDLL(None), "_ZN3tvm7runtime9threading14MaxConcurrencyEv")
seen = []
for count in (2, 1, 2):
    set_pool_threads(count)
    seen.append([count, max_concurrency(), int(tvm_ffi().get_global_func("runtime.NumThreads")())])
print(json.dumps({"seen": seen, "pool": pool}))
"""


def test_set_pool_threads_runs_kernels_on_that_many_threads_and_can_go_back_up():
    """The pool's count switched in one thread (benchmarks/decode_step_profile.py does): TVM's MaxConcurrency follows,
    also back up from 1 (TVM pins the thread to one CPU at 1: a CPU list read from its affinity could not grow)."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", POOL], capture_output=True, text=True, env=env, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["seen"] == [[count, count, min(count, result["pool"])] for count in (2, 1, 2)], result


def test_a_library_whose_blob_pages_were_released_loads_and_runs_again(cached_compile):
    """``load_vm`` drops the pages of the library's serialized modules (slmc.artifact.library_blob): the blob
    is read back from the file by a second load of the same library in the process, which then runs the same."""
    import slmc
    from slmc.artifact.layout import LIBRARY
    from slmc.artifact.library_blob import release_library_blob

    ids = np.array([[1, 2, 3]], dtype=np.int64)
    first = slmc.load(cached_compile.artifact).decoder().feed(ids, last_only=True).copy()
    released = release_library_blob(cached_compile.artifact / LIBRARY)  # already released by the load: again
    assert released > 0 and released % 4096 == 0, released  # tiny-lm's blob spans whole pages
    again = slmc.load(cached_compile.artifact).decoder().feed(ids, last_only=True)
    np.testing.assert_array_equal(again, first)  # exact: the same bytes deserialized, the same kernels
