"""``slmc.load`` uses the weights in place from a memory mapping of weights.safetensors, stores identical
weights once, and copies nothing: memory is compared, never time (slmc.artifact.runtime, issue 22)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import slmc
from slmc.artifact.layout import WEIGHTS

SIZE = 2048  # a 2048 x 2048 float32 weight: 16 MB, far above what loading allocates besides the weights


class TwinLinears(torch.nn.Module):
    """Two layers whose weights are equal (not tied: two parameters holding the same values)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(SIZE, SIZE, bias=False)
        self.b = torch.nn.Linear(SIZE, SIZE, bias=False)
        with torch.no_grad():
            self.b.weight.copy_(self.a.weight)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    return slmc.compile(TwinLinears(), "cleanup", "host", tmp_path_factory.mktemp("twins") / "twins",
                        example_inputs=(torch.randn(1, SIZE),)).artifact


def _mapping_of(path):
    """[(start, end)] of this process's mappings of ``path``."""
    ranges = []
    for line in open("/proc/self/maps", encoding="utf-8"):
        fields = line.split()
        if len(fields) >= 6 and fields[5] == str(path.resolve()):
            start, end = (int(v, 16) for v in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def test_identical_weights_are_stored_once_and_read_through_the_alias(twins):
    model = slmc.load(twins)
    info = model.manifest.weights
    assert len(info.order) == 2 and info.aliases == {info.order[1]: info.order[0]}
    assert info.bytes == SIZE * SIZE * 4 and (twins / WEIGHTS).stat().st_size < 1.01 * info.bytes
    x = np.random.default_rng(0).standard_normal((1, SIZE)).astype(np.float32)
    eager = TwinLinears()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(model(x), eager, rtol=1e-4, atol=1e-4)


def test_every_weight_tvm_reads_lies_in_the_mapping_of_the_weights_file(twins):
    model = slmc.load(twins)
    ranges = _mapping_of(twins / WEIGHTS)
    pointers = [np.from_dlpack(w).ctypes.data for w in model._weights]
    assert ranges and all(any(start <= p < end for start, end in ranges) for p in pointers)


LOAD_AND_RUN = """
import json, sys
import numpy as np
import slmc
import slmc.artifact.runtime
from slmc.artifact.tvm_runtime import cpu

def status(key):
    return int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1]) * 1024

cpu()  # the runtime's modules and TVM's runtime library loaded: what follows is the artifact
before = status('RssAnon')
model = slmc.load(sys.argv[1])
out = model(np.ones((1, {size}), np.float32))  # reads every weight
print(json.dumps({{"anon_growth": status('RssAnon') - before, "torch": "torch" in sys.modules, "tvm": "tvm" in sys.modules,
                   "libraries": sorted({{l.split()[-1].rsplit('/', 1)[-1] for l in open('/proc/self/maps') if 'libtvm' in l}})}}))
"""


def test_loading_and_running_copies_no_weights_and_loads_neither_torch_nor_the_compiler(twins):
    done = subprocess.run([sys.executable, "-c", LOAD_AND_RUN.format(size=SIZE), str(twins)], capture_output=True, text=True,
                          check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    weights = slmc.load(twins).manifest.weights.bytes
    # a copying loader (safetensors' load_file + a TVM tensor per weight, as before) grows by twice the
    # parameters' bytes (64 MB here); mapped in place, by the VM's own buffers only
    assert seen["anon_growth"] < weights / 4, seen
    assert not seen["torch"] and not seen["tvm"], seen
    assert "libtvm_runtime.so" in seen["libraries"] and "libtvm_compiler.so" not in seen["libraries"], seen
