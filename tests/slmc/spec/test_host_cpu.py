"""LLVM's name of this machine's CPU, asked without TVM's compiler in the process (slmc.spec.host_cpu)."""

from __future__ import annotations

import os
import subprocess
import sys

import tvm

ASK = "import sys; from slmc.spec.host_cpu import system_cpu, _memo_file; print(system_cpu()); print(_memo_file()); print('tvm' in sys.modules)"


def _ask(cache):
    done = subprocess.run([sys.executable, "-c", ASK], capture_output=True, text=True, check=True,
                          env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    return done.stdout.split()


def test_a_process_without_tvm_gets_llvms_answer_once_then_reads_it(tmp_path):
    answer, memo, imported = _ask(tmp_path)
    assert answer == str(tvm.target.codegen.llvm_get_system_cpu()) and imported == "False"
    assert open(memo, encoding="utf-8").read().strip() == answer and memo.startswith(str(tmp_path))
    with open(memo, "w", encoding="utf-8") as f:  # the stored answer is what later processes read
        f.write("stored-cpu\n")
    assert _ask(tmp_path)[0] == "stored-cpu"
