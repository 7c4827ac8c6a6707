"""The TOSA reference model (PyPI ``tosa-tools``) as the integer oracle of the NPU partitions.

Arm's TOSA reference model executes a serialized TOSA graph with the specification's exact integer
semantics (it is the golden model ExecuTorch's Arm backend tests against). Each partition's
flatbuffer (``slmc.npu.tosa_lowering``, the same bytes Vela compiles) runs on the int8 codes the
partition received on the verification samples, in blocks of the partition's ``rows`` (the last
block padded with zero rows, whose outputs are dropped: rows are independent in a linear), and
slmc's integer execution must agree bit for bit.

The reference model writes its diagnostics to the process's stderr from C++; they are captured and
put into the error when a graph does not run (``TosaReferenceError``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from slmc.errors import ToolchainError
from slmc.npu.tosa_lowering import TosaPartition, tosa_tools_module


class TosaReferenceError(ToolchainError):
    """The TOSA reference model refused a partition's graph or its inputs."""


@contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Redirect file descriptor 2 (C++ writes there) into a temporary file; yields a list filled with its text."""
    text: list[str] = []
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text.append(sink.read().decode("utf-8", "replace"))


def run_partition(partition: TosaPartition, codes: np.ndarray) -> np.ndarray:
    """int8 ``[M, N]``: the reference model's output of ``partition`` for int8 ``codes [M, K]``."""
    tosa_reference_model = tosa_tools_module("tosa_reference_model")
    rows, k = partition.rows, partition.in_features
    outputs = []
    for start in range(0, codes.shape[0], rows):
        block = codes[start:start + rows]
        padded = np.zeros((rows, k), dtype=np.int8)
        padded[:block.shape[0]] = block
        with _captured_stderr() as messages:
            try:
                result, status = tosa_reference_model.run(partition.flatbuffer, [padded.reshape(1, 1, rows, k)])
            except ValueError as exc:
                result, status = None, exc
        if result is None or status != tosa_reference_model.GraphStatus.TOSA_VALID:
            raise TosaReferenceError(f"TOSA reference model on NPU partition {partition.index} ('{partition.layer}'): "
                                     f"{status}; {messages[0].strip()[-500:]}")
        outputs.append(np.asarray(result[0]).view(np.int8).reshape(rows, partition.out_features)[:block.shape[0]])
    return np.concatenate(outputs, axis=0)
