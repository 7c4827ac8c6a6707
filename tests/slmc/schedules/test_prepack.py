"""Prepacking: weights main only re-lays out are stored in their final layout (slmc.schedules.prepack)."""

from __future__ import annotations

import numpy as np
import torch
import tvm
from tvm import relax

from slmc.graph.ir import ModelSpec, trace
from slmc.backend.lowering import build, to_relax
from slmc.schedules.prepack import prepack


class TiedLM(torch.nn.Module):
    """An embedding table reused as the output projection (tied), and an untied linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(50, 32)
        self.proj = torch.nn.Linear(32, 32, bias=False)

    def forward(self, ids):
        h = self.proj(self.embed(ids))
        return h @ self.embed.weight.T


class TableAlsoAdded(TiedLM):
    """The table is gathered, transposed and also read as it is: it must stay as it is."""

    def forward(self, ids):
        return super().forward(ids) + self.embed.weight.sum()


def _program(module):
    spec = ModelSpec(module, (torch.randint(0, 50, (1, 4)),), ({1: torch.export.Dim("t", min=1, max=16)},))
    return to_relax(trace(spec))


def _run(program, host_target, ids):
    vm = relax.VirtualMachine(build(program, host_target), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(ids.numpy()), *[tvm.runtime.tensor(w) for w in program.weights])[0].numpy()


def test_transposed_and_tied_weights_are_stored_transposed_and_outputs_match(host_target):
    module = TiedLM().eval()
    program = _program(module)
    by_name = dict(zip(program.weight_names, program.weights))
    proj = next(v for k, v in by_name.items() if "proj" in k)
    embed = next(v for k, v in by_name.items() if "embed" in k)
    np.testing.assert_array_equal(proj, module.proj.weight.detach().numpy().T)  # [K, N]: prepacked
    # tied: gathered by rows and transposed; stored transposed once, the gather reads columns
    np.testing.assert_array_equal(embed, module.embed.weight.detach().numpy().T)
    assert any("prepacked 2 weights" in note for note in program.notes)
    main = program.module["main"]
    assert [list(p.ty.shape.values) for p in main.params[program.num_inputs:]] == [list(w.shape) for w in program.weights]
    assert "permute_dims(p_embed_weight" not in main.script()  # no transpose of the table at run time
    for length in (1, 7, 16):
        ids = torch.randint(0, 50, (1, length))
        with torch.no_grad():
            np.testing.assert_allclose(_run(program, host_target, ids), module(ids).numpy(), atol=1e-4)  # measured 0


def test_a_weight_with_another_use_is_left_as_it_is(host_target):
    module = TableAlsoAdded().eval()
    program = _program(module)
    embed = next(v for k, v in zip(program.weight_names, program.weights) if "embed" in k)
    np.testing.assert_array_equal(embed, module.embed.weight.detach().numpy())
    assert any("prepacked 1 weights" in note for note in program.notes)
    ids = torch.randint(0, 50, (1, 5))
    with torch.no_grad():
        np.testing.assert_allclose(_run(program, host_target, ids), module(ids).numpy(), atol=1e-3)


def _chain_module(chain_twice: bool, other_chain: bool = False):
    """main(x [2, 12], w [4, 6]): x @ reshape(permute_dims(w), [12, 2]), the chain emitted once or twice."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([2, 12], "float32"))
    w = relax.Var("w", relax.TensorType([4, 6], "float32"))
    with bb.function("main", [x, w], attrs={"num_input": 1}):
        with bb.dataflow():
            outs = []
            for i in range(2 if chain_twice else 1):
                t = bb.emit(relax.op.permute_dims(w) if not (other_chain and i) else relax.op.reshape(w, [6, 4]))
                r = bb.emit(relax.op.reshape(t, [12, 2]))
                outs.append(bb.emit(relax.op.matmul(x, r)))
            out = bb.emit_output(outs[0] if len(outs) == 1 else bb.emit(relax.op.add(outs[0], outs[1])))
        bb.emit_func_output(out)
    return bb.get()


def test_a_relayout_chain_is_folded_into_the_stored_weight():
    w = np.arange(24, dtype="float32").reshape(4, 6)
    x = np.random.default_rng(0).standard_normal((2, 12)).astype("float32")
    for twice in (False, True):
        module = _chain_module(twice)
        packed, weights, count = prepack(module, [w], 1)
        assert count == 1
        np.testing.assert_array_equal(weights[0], w.T.reshape(12, 2))
        script = packed["main"].script()
        assert "permute_dims" not in script and "R.reshape" not in script
        ex = tvm.compile(packed, target=tvm.target.Target({"kind": "llvm"}))
        got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(weights[0])).numpy()
        np.testing.assert_allclose(got, (x @ w.T.reshape(12, 2)) * (2 if twice else 1), rtol=1e-5, atol=1e-5)  # float32 sums


def test_two_different_chains_are_not_folded():
    module = _chain_module(True, other_chain=True)
    w = np.zeros((4, 6), "float32")
    packed, weights, count = prepack(module, [w], 1)
    assert count == 0 and packed is module and weights[0] is w


def test_a_view_as_words_is_folded_with_its_dtype():
    """int4 code bytes read as little-endian uint32 words and tiled (tvm_kernels._code_layout): stored so, uint32."""
    codes = np.random.default_rng(0).integers(0, 256, (8, 16)).astype("uint8")  # [N, K/2]
    bb = relax.BlockBuilder()
    w = relax.Var("w", relax.TensorType([8, 16], "uint8"))
    with bb.function("main", [w]):
        with bb.dataflow():
            words = bb.emit(relax.op.memory.view(w, [8, 4], "uint32"))
            tiled = bb.emit(relax.op.permute_dims(bb.emit(relax.op.reshape(words, [2, 4, 4])), [0, 2, 1]))
            out = bb.emit_output(bb.emit(relax.op.astype(tiled, "float32")))
        bb.emit_func_output(out)
    packed, weights, count = prepack(bb.get(), [codes], 0)
    assert count == 1 and weights[0].dtype == np.uint32 and weights[0].shape == (2, 4, 4)
    assert packed["main"].params[0].ty.dtype == "uint32" and "view" not in packed["main"].script()
    word = [int.from_bytes(bytes(codes[n, 4 * c:4 * c + 4]), "little") for n in range(8) for c in range(4)]
    np.testing.assert_array_equal(weights[0], np.array(word, np.uint32).reshape(2, 4, 4).transpose(0, 2, 1))
