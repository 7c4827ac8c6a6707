"""End to end: recipe + target + model -> passes -> TVM build -> artifact -> load -> run."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

import slmc
from slmc.errors import ArtifactError, ExecutionRequiredError, ModelError, VerificationError
from slmc.models import tiny_lm


@pytest.fixture(scope="module")
def default_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts") / "tiny"
    return slmc.compile("tiny-lm", "cleanup", out=out)  # the lossless built-in: artifact == eager original


def test_default_compile_verifies_within_1e_4(default_artifact):
    v = default_artifact.verification
    assert v.executed and v.passed
    assert v.artifact_vs_eager.max_abs_error <= 1e-4  # measured: 9.5e-7
    assert v.samples == 4


def test_manifest_records_everything(default_artifact):
    path = default_artifact.artifact
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.so", "weights.safetensors", "verification.safetensors"}
    for name, entry in manifest["files"].items():
        assert entry["size"] == (path / name).stat().st_size and len(entry["sha256"]) == 64
    assert manifest["versions"]["tvm"] and manifest["versions"]["torch"].startswith("2.13")
    assert manifest["model"]["name"] == "tiny-lm" and len(manifest["model"]["fingerprint"]) == 64
    assert [p["name"] for p in manifest["passes"]] == ["constant_folding", "dead_code_elimination"]
    assert manifest["recipe"]["verify"]["atol"] == 1e-4
    assert manifest["target"]["name"] == "host" and manifest["target"]["tvm"]["mcpu"] != "native"
    sig = manifest["signature"]
    assert sig["inputs"] == [
        {"name": "input_ids", "dtype": "int64", "shape": [1, "tokens"]},
        {"name": "past_keys", "dtype": "float32", "shape": [2, 1, 4, "past", 32]},
        {"name": "past_values", "dtype": "float32", "shape": [2, 1, 4, "past", 32]},
    ]
    assert sig["outputs"][0] == {"name": "logits", "dtype": "float32", "shape": [1, "tokens", 256]}
    assert sig["outputs"][1]["shape"] == [2, 1, 4, "past + tokens", 32]
    assert sig["dynamic_dims"] == {"tokens": [1, 256], "past": [1, 256]}
    assert manifest["task"] == "causal-lm" and manifest["tokenizer"] == {"kind": "bytes", "file": None, "bos_token": None, "eos_token": None}
    assert manifest["kv_cache"] == {"layers": 2, "kv_heads": 4, "head_dim": 32, "max_context": 256, "mode": "resident", "reason": None, "last_position": True,
                                    "dtype": "float32", "bytes_per_token": 2 * 2 * 4 * 32 * 4}
    assert not list(path.parent.glob(".tiny.staging-*"))


def test_load_and_run_matches_eager_at_other_lengths(default_artifact, lm_inputs):
    model = slmc.load(default_artifact.artifact)
    spec = tiny_lm.build()
    for tokens, past in ((1, 1), (1, 200), (37, 1), (255, 1), (20, 30)):
        inputs = lm_inputs(tokens, past, seed=tokens)
        out = model(*inputs)
        assert all(isinstance(o, torch.Tensor) for o in out) and out[0].shape == (1, tokens, 256)
        with torch.no_grad():
            ref = spec.module(*inputs)
        for o, r in zip(out, ref):
            assert torch.max(torch.abs(o - r)).item() <= 1e-4
        assert isinstance(model(*[t.numpy() for t in inputs])[0], np.ndarray)


def test_decode_through_the_kv_cache_matches_eager_for_16_steps(default_artifact):
    from slmc.graph.kv_cache import eager_step, generate_greedy

    decode = default_artifact.verification.decode
    assert decode.steps == 16 and decode.same_tokens and decode.max_abs_error <= 1e-4  # measured 1.1e-6
    model = slmc.load(default_artifact.artifact)
    spec = tiny_lm.build()
    prompt = spec.tokenizer.encode("import os\n")
    ours = generate_greedy(model.step, model.kv_cache, prompt, 16)
    theirs = generate_greedy(eager_step(spec.module), spec.kv_cache, prompt, 16)
    assert ours.tokens == theirs.tokens
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(ours.step_logits, theirs.step_logits)) <= 1e-4


def test_out_of_range_token_ids_are_refused(default_artifact, lm_inputs):
    model = slmc.load(default_artifact.artifact)
    ids, keys, values = lm_inputs(4)
    with pytest.raises(slmc.InputError, match=r"token ids must lie in \[0, 256\)"):
        model(ids + 300, keys, values)


def test_load_rejects_wrong_inputs(default_artifact, lm_inputs):
    model = slmc.load(default_artifact.artifact)
    ids, keys, values = [t.numpy() for t in lm_inputs(4)]
    with pytest.raises(slmc.InputError, match="must be int64"):
        model(ids.astype(np.float32), keys, values)
    with pytest.raises(slmc.InputError, match="takes 3 inputs"):
        model(ids)
    with pytest.raises(slmc.InputError, match="must have shape"):
        model(ids, keys[:, :, :2], values)


def test_load_detects_tampering(default_artifact, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(default_artifact.artifact, copy)
    with open(copy / "weights.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ArtifactError, match="sha256 differs"):
        slmc.load(copy)
    (copy / "model.so").unlink()
    with pytest.raises(ArtifactError, match="model.so: missing"):
        slmc.load(copy)


class TwoLayer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.a = torch.nn.Linear(16, 32)
        self.b = torch.nn.Linear(32, 4)

    def forward(self, x):
        return torch.softmax(self.b(torch.relu(self.a(x))), dim=-1), x.mean(-1)


def test_user_module_through_the_api(tmp_path):
    batch = torch.export.Dim("batch", min=1, max=64)
    result = slmc.compile(TwoLayer(), out=tmp_path / "two", example_inputs=(torch.randn(3, 16),),
                          dynamic_shapes=({0: batch},))
    assert result.verification.passed
    model = slmc.load(result.artifact)
    probs, mean = model(torch.randn(9, 16))
    assert probs.shape == (9, 4) and mean.shape == (9,)


def test_module_without_example_inputs_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="example_inputs"):
        slmc.compile(TwoLayer(), out=tmp_path / "x")


def test_tolerance_failure_writes_no_artifact(tmp_path):
    recipe = tmp_path / "strict.yaml"
    recipe.write_text("verify:\n  atol: 0.0\n")
    with pytest.raises(VerificationError) as err:
        slmc.compile("tiny-lm", recipe=recipe, out=tmp_path / "strict")
    assert "differ from eager" in str(err.value) and err.value.exit_code == 1
    assert err.value.verification["artifact_vs_eager"]["max_abs_error"] > 0
    assert not (tmp_path / "strict").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".strict")]


def test_quality_gate_failure_names_the_gate(tmp_path):
    recipe = tmp_path / "gated.yaml"
    recipe.write_text("passes:\n  - constant_folding: {}\n  - cast_weights: {}\nverify:\n  gates:\n    max_abs_error: 1.0e-6\n")
    with pytest.raises(VerificationError, match="quality gate max_abs_error not met") as err:
        slmc.compile("tiny-lm", recipe=recipe, out=tmp_path / "gated")
    (gate,) = err.value.verification["gates"]
    assert not gate["passed"] and gate["measured"] > 1e-6


def test_cast_weights_halves_weight_bytes(tmp_path, default_artifact):
    recipe = tmp_path / "fp16.yaml"
    recipe.write_text("passes:\n  - cast_weights: {}\nverify:\n  gates:\n    min_cosine: 0.9999\n")
    result = slmc.compile("tiny-lm", recipe=recipe, out=tmp_path / "fp16")
    assert result.verification.passed
    assert "float16" in result.manifest.weights.dtypes
    fp32_bytes = default_artifact.manifest.weights.bytes
    assert result.manifest.weights.bytes < 0.52 * fp32_bytes


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(ArtifactError, match="refusing to overwrite"):
        slmc.compile("tiny-lm", out=out)
    assert (out / "notes.txt").read_text() == "precious"


def test_recompile_replaces_an_earlier_artifact(tmp_path):
    out = tmp_path / "again"
    first = slmc.compile("tiny-lm", out=out).manifest.files
    second = slmc.compile("tiny-lm", out=out).manifest.files
    assert first["weights.safetensors"] == second["weights.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]


def test_aarch64_target_gives_an_aarch64_shared_object(tmp_path):
    if shutil.which("aarch64-linux-gnu-gcc") is None:
        pytest.fail("aarch64-linux-gnu-gcc is required (apt-get install gcc-aarch64-linux-gnu); .ci/run installs it")
    result = slmc.compile("tiny-lm", target="arm-cortex-a76", out=tmp_path / "arm")
    described = subprocess.run(["file", "-b", str(result.artifact / "model.so")], capture_output=True, text=True, check=True).stdout
    assert "ELF 64-bit" in described and "aarch64" in described and "shared object" in described
    v = result.verification
    assert v.executed is False and "aarch64" in v.reason  # never claims more than was done
    with pytest.raises(ArtifactError, match="cannot run on this machine"):
        slmc.load(result.artifact)


INT4_GATED = """\
passes: [{quantize: {bits: 4, group_size: 32}}]
verify:
  text: stdlib-heldout
  max_eval_tokens: 256
  gates: {min_top1_agreement: 0.999, max_perplexity_increase: "0.1%"}
"""


def test_gates_are_measured_on_the_host_for_a_target_this_machine_cannot_run(tmp_path):
    """Issue 16: the gates compare the compressed graph with the original; they fail an aarch64 build
    as they fail a host one, and only the checks that need the artifact are reported as not executed."""
    recipe = tmp_path / "int4.yaml"
    recipe.write_text(INT4_GATED)
    with pytest.raises(VerificationError, match="quality gate min_top1_agreement not met") as err:
        slmc.compile("tiny-lm", recipe, "arm-cortex-a76", out=tmp_path / "arm")
    assert err.value.exit_code == 1 and not (tmp_path / "arm").exists()
    v = err.value.manifest.verification  # the discarded artifact's manifest travels with the error
    assert not v.executed and not v.passed and v.artifact_vs_eager is None and v.decode is None
    assert v.reason.startswith("not executed: code is for aarch64")
    assert [(c.check, c.reason) for c in v.not_executed] == [("artifact_vs_eager", v.reason), ("decode", v.reason)]
    gates = {g.gate: g for g in v.gates}
    assert set(gates) == {"min_top1_agreement", "max_perplexity_increase"} and all(g.where == "host" for g in gates.values())
    assert not gates["min_top1_agreement"].passed and gates["min_top1_agreement"].measured < 0.999
    assert v.perplexity is not None and v.perplexity.tokens_scored > 0
    assert gates["max_perplexity_increase"].measured == pytest.approx(v.perplexity.increase)
    assert v.compressed_vs_original.top1_agreement == gates["min_top1_agreement"].measured and v.recheck is not None


def test_a_build_that_requires_execution_fails_when_the_artifact_runs_nowhere(tmp_path):
    recipe = tmp_path / "required.yaml"
    recipe.write_text("verify:\n  num_samples: 1\n  require_execution: true\n  gates: {min_cosine: 0.99}\n")
    with pytest.raises(ExecutionRequiredError, match=r"requires its artifact executed .*and it was not: not executed: "
                                                     r"code is for aarch64") as err:
        slmc.compile("tiny-lm", recipe, "arm-cortex-a76", out=tmp_path / "arm")
    assert err.value.exit_code == 1 and not (tmp_path / "arm").exists()
    v = err.value.manifest.verification
    assert v.passed and not v.executed and [g.where for g in v.gates] == ["host"]  # what was checked passed
    assert slmc.compile("tiny-lm", recipe, "host", out=tmp_path / "host").verification.executed  # runs here: fine


def test_missing_cross_compiler_says_how_to_install_it(tmp_path, monkeypatch):
    import slmc.backend.lowering

    monkeypatch.setattr(slmc.backend.lowering.shutil, "which", lambda name: None)
    with pytest.raises(slmc.CompileError, match="apt-get install gcc-aarch64-linux-gnu") as err:
        slmc.compile("tiny-lm", target="arm-cortex-a76", out=tmp_path / "arm")
    assert err.value.exit_code == 1
    assert not (tmp_path / "arm").exists() and not list(tmp_path.iterdir())
