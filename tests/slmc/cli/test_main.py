"""The CLI through its real entry point, as a build pipeline calls it."""

import json
import re
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest


def slmc(*args, cwd, env=None):
    exe = shutil.which("slmc") or pytest.fail("the slmc console script is not installed (pip install -e .)")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def compiled(workdir):
    result = slmc("compile", "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_version_and_help(workdir):
    version = slmc("--version", cwd=workdir)
    assert version.returncode == 0 and version.stdout.startswith("slmc, version ")
    for command in ([], ["compile"], ["run"], ["targets"], ["targets", "show"], ["recipe"], ["recipe", "check"]):
        result = slmc(*command, "--help", cwd=workdir)
        assert result.returncode == 0 and "Usage:" in result.stdout, command


def test_compile_with_no_arguments_uses_the_embedded_default(compiled, workdir):
    assert compiled["ok"] is True
    assert compiled["artifact"] == "slmc-out/fixture-lm-host"  # the trained fixture LM is the embedded default
    assert (workdir / compiled["artifact"] / "manifest.json").is_file()
    assert compiled["verification"]["passed"] and compiled["verification"]["artifact_vs_eager"]["max_abs_error"] <= 1e-4
    # the built-in default recipe compresses: int4 g32 + int8 head, perplexity gated (slmc/recipes/default.yaml)
    assert [p["name"] for p in compiled["passes"]] == ["quantize"]
    assert compiled["files"]["weights.safetensors"]["size"] < 0.2 * 4_852_000 * 4  # measured 3.2 MB of 19.4 MB
    (gate,) = compiled["verification"]["gates"]
    assert gate["gate"] == "max_perplexity_increase" and gate["passed"] and gate["measured"] < 0.02  # measured 0.0028


def test_human_summary_says_where_and_what_was_checked(workdir):
    result = slmc("compile", "-o", "human", "--cache-dir", "cache", cwd=workdir)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "artifact: human" in out
    assert "verified: executed natively" in out and "max abs error" in out
    assert re.search(r"size: weights 18\.5 MiB -> 3\.1 MiB \(0\.1\d\dx", out), out
    assert re.search(r"bits/weight: 5\.\d\d ", out), out  # int4 g32 + int8 head (and fp32 norms)
    assert re.search(r"perplexity: [\d.]+ -> [\d.]+ \(\+0\.\d\d%\)", out), out
    assert re.search(r"gate max_perplexity_increase: measured [\d.e-]+ vs threshold 0\.02: pass", out), out
    assert re.search(r"decode speed: \d+ -> \d+ tokens/s .*eager PyTorch", out), out
    assert "pass quantize:" in out and "cache: miss" in out
    hit = slmc("compile", "-o", "human-again", "--cache-dir", "cache", cwd=workdir)
    assert hit.returncode == 0, hit.stderr
    assert "(cache hit" in hit.stdout and "cache: hit" in hit.stdout
    assert "pass quantize:" not in hit.stdout  # the stored compile's timings are not replayed
    assert "decode speed:" in hit.stdout and "perplexity:" in hit.stdout  # the artifact's figures, from its manifest


def test_the_lossless_cleanup_recipe_is_built_in(workdir):
    result = slmc("recipe", "check", "cleanup", "-t", "host", "--json", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_run_an_artifact_on_npy_inputs(compiled, workdir):
    np.save(workdir / "ids.npy", np.arange(12, dtype=np.int64).reshape(1, 12))
    np.save(workdir / "cache.npy", np.zeros((4, 1, 4, 1, 32), dtype=np.float32))  # fixture: 4 layers, 4 KV heads
    inputs = ["--input", "ids.npy", "--input", "cache.npy", "--input", "cache.npy"]
    result = slmc("run", compiled["artifact"], *inputs, "--output", "out.npz", "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outputs"][0] == {"name": "logits", "shape": [1, 12, 4096], "dtype": "float32"}
    with np.load(workdir / "out.npz") as out:
        assert out["logits"].shape == (1, 12, 4096) and out["keys"].shape == (4, 1, 4, 13, 32)


def test_generate_and_eval(compiled, workdir):
    result = slmc("generate", compiled["artifact"], "--prompt", "def ", "--max-new-tokens", "8", "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["prompt_tokens"] >= 1 and len(data["tokens"]) == 8
    (workdir / "eval.txt").write_text("def add(a, b):\n    return a + b\n" * 30)
    result = slmc("eval", compiled["artifact"], "--text", "eval.txt", "--reference", "fixture-lm", "--max-tokens", "600", "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    # the default compile is int4: measured 3.193 vs 3.108 (+2.8%) on this text, top-1 agreement 0.951
    assert abs(data["perplexity"] / data["reference"]["perplexity"] - 1) < 0.06
    assert data["comparison"]["top1_agreement"] >= 0.9 and data["tokens_scored"] == data["comparison"]["tokens_compared"]
    bad = slmc("generate", compiled["artifact"], "--prompt", "x = 1\n" * 300, cwd=workdir)
    assert bad.returncode == 2 and "exceed max_context" in bad.stderr


def test_generate_reports_time_to_first_token_and_decode_speed(compiled, workdir):
    result = slmc("generate", compiled["artifact"], "--prompt", "def ", "--max-new-tokens", "8", "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["generated_tokens"] == len(data["tokens"]) == 8 and data["prompt_tokens"] >= 1
    assert data["ttft_ms"] > 0 and data["decode_tokens_per_s"] > 0
    human = slmc("generate", compiled["artifact"], "--prompt", "def ", "--max-new-tokens", "8", cwd=workdir)
    assert human.returncode == 0, human.stderr
    text, _, speed = human.stdout.rstrip().rpartition("\n")
    assert text.startswith("def ")
    assert re.search(r"\d+ prompt tokens, 8 generated; time to first token \d+\.\d ms; decode \d+\.\d tokens/s", speed), speed


def test_eval_defaults_to_the_models_heldout_text_and_shows_the_change(compiled, workdir):
    args = ("eval", compiled["artifact"], "--reference", "fixture-lm", "--max-tokens", "300")
    result = slmc(*args, "--json", cwd=workdir)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["text"] == "stdlib-heldout"  # the fixture LM's held-out split, named by the artifact's manifest
    assert data["perplexity_change"] == pytest.approx(data["perplexity"] / data["reference"]["perplexity"] - 1)
    scored = data["tokens_scored"]
    # stderr is not a terminal here: plain progress lines, tokens done / total, no carriage returns
    assert "\r" not in result.stderr
    for label in ("perplexity", "compare"):
        assert re.search(rf"^\[ *\d+\.\ds\] {label}: {scored}/{scored} tokens, done in ", result.stderr, re.M), result.stderr
    human = slmc(*args, cwd=workdir)
    assert human.returncode == 0, human.stderr
    assert re.search(r"perplexity \d+\.\d{4} \(reference \d+\.\d{4}, [+-]\d+\.\d\d%\) over \d+ tokens of stdlib-heldout",
                     human.stdout), human.stdout
    no_text = slmc("eval", "tiny-lm", cwd=workdir)
    assert no_text.returncode == 2 and "has no held-out text of its own: give --text" in no_text.stderr


def test_compile_progress_lines_outside_a_terminal(workdir):
    result = slmc("compile", "-m", "tiny-lm", "-o", "tiny-progress", cwd=workdir)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "\r" not in result.stderr and all(re.match(r"^\[ *\d+\.\ds\] ", line) for line in lines), lines
    for step in ("stage load", "pass constant_folding", "pass dead_code_elimination", "stage build", "stage verify"):
        assert any(re.search(rf"\] {step} done in \d+\.\d s$", line) for line in lines), (step, lines)
    quiet = slmc("compile", "-m", "tiny-lm", "-o", "tiny-progress", "--quiet", cwd=workdir)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_run_generate_and_eval_on_a_tvm_rpc_server(compiled, workdir, host_rpc_server):
    """``--device rpc://...``: the artifact runs on TVM's RPC server (on loopback, serving a host artifact)
    with the same results as here; a model reference is not an artifact and cannot go there."""
    url, artifact = host_rpc_server.url, compiled["artifact"]
    args = ["generate", artifact, "--prompt", "def ", "--max-new-tokens", "6", "--json"]
    here, there = slmc(*args, cwd=workdir), slmc(*args, "--device", url, cwd=workdir)
    assert here.returncode == 0 and there.returncode == 0, there.stderr
    assert json.loads(there.stdout)["tokens"] == json.loads(here.stdout)["tokens"]
    np.save(workdir / "ids4.npy", np.arange(4, dtype=np.int64).reshape(1, 4))
    np.save(workdir / "cache4.npy", np.zeros((4, 1, 4, 1, 32), dtype=np.float32))
    inputs = ["--input", "ids4.npy", "--input", "cache4.npy", "--input", "cache4.npy"]
    assert slmc("run", artifact, *inputs, "--output", "here.npz", cwd=workdir).returncode == 0
    remote = slmc("run", artifact, *inputs, "--output", "there.npz", "--device", url, cwd=workdir)
    assert remote.returncode == 0, remote.stderr
    with np.load(workdir / "here.npz") as a, np.load(workdir / "there.npz") as b:
        # here the resident functions run (tiled attention with an online softmax), there the copy contract's
        # main (the RPC path): the same sums in another order, measured 3.6e-5 apart on logits up to 10
        np.testing.assert_allclose(b["logits"], a["logits"], atol=1e-4)
    (workdir / "rpc-eval.txt").write_text("def add(a, b):\n    return a + b\n" * 4)
    evaluated = slmc("eval", artifact, "--text", "rpc-eval.txt", "--max-tokens", "64", "--window", "32", "--stride", "16",
                     "--device", url, "--json", cwd=workdir)
    assert evaluated.returncode == 0, evaluated.stderr
    data = json.loads(evaluated.stdout)
    assert data["subject"].endswith(f"on {url}") and data["perplexity"] > 1
    model = slmc("generate", "fixture-lm", "--prompt", "a", "--device", url, cwd=workdir)
    assert model.returncode == 2 and "not an artifact directory" in model.stderr


def test_run_errors_exit_2(compiled, workdir):
    np.save(workdir / "bad.npy", np.zeros((1, 3), dtype=np.float32))
    result = slmc("run", compiled["artifact"], "--input", "bad.npy", cwd=workdir)
    assert result.returncode == 2 and "takes 3 inputs" in result.stderr
    result = slmc("run", "no-such-dir", "--input", "bad.npy", cwd=workdir)
    assert result.returncode == 2 and "manifest.json is missing" in result.stderr


def test_targets_list_and_show(workdir):
    listing = slmc("targets", cwd=workdir)
    assert listing.returncode == 0 and "host" in listing.stdout and "arm-cortex-a76" in listing.stdout
    shown = slmc("targets", "show", "host", "--json", cwd=workdir)
    assert shown.returncode == 0 and json.loads(shown.stdout)["tvm"]["mcpu"] != "native"
    missing = slmc("targets", "show", "nope", cwd=workdir)
    assert missing.returncode == 2 and "neither a built-in target" in missing.stderr


MARKER_MODULE = """
import pathlib
pathlib.Path(__file__).with_name("model-was-loaded").write_text("yes")
def factory():
    raise RuntimeError("must never be called")
"""


@pytest.mark.parametrize(
    "recipe, needle",
    [
        ("verify:\n  colour: blue\n", "verify.colour: unknown key"),
        ("verify:\n  gates:\n    min_top1_agreement: -0.25\n", "verify.gates.min_top1_agreement"),
        ("passes:\n  - quantise: {}\n", "unknown pass 'quantise'"),
        ("passes:\n  - cast_weights: {}\n  - constant_folding: {}\n", "'cast_weights' must come after 'constant_folding'"),
    ],
)
def test_bad_recipes_exit_2_before_the_model_loads(workdir, recipe, needle, tmp_path):
    (tmp_path / "marker_model.py").write_text(MARKER_MODULE)
    (tmp_path / "r.yaml").write_text(recipe)
    env = {"PYTHONPATH": str(tmp_path)}
    result = slmc("compile", "-m", "marker_model:factory", "-r", "r.yaml", "--json", cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and "r.yaml" in result.stderr
    assert json.loads(result.stdout)["error"]["type"] == "RecipeError"
    assert not (tmp_path / "model-was-loaded").exists()
    check = slmc("recipe", "check", "r.yaml", cwd=tmp_path)
    assert check.returncode == 2 and needle in check.stderr


def test_recipe_against_target_exits_2_naming_both(tmp_path):
    import yaml

    host = json.loads(slmc("targets", "show", "host", "--json", cwd=tmp_path).stdout)
    host.update(name="fp32-board")
    host["dtypes"]["weights"] = ["float32"]
    (tmp_path / "board.yaml").write_text(yaml.safe_dump(host))
    (tmp_path / "r.yaml").write_text("passes:\n  - cast_weights: {}\n")
    result = slmc("recipe", "check", "r.yaml", "-t", "board.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "passes.0.cast_weights.dtype" in result.stderr and "fp32-board" in result.stderr


def test_bad_model_reference_exits_2(tmp_path):
    result = slmc("compile", "-m", "not-a-model", cwd=tmp_path)
    assert result.returncode == 2 and "neither a built-in model" in result.stderr
    result = slmc("compile", "-m", "no_such_module_xyz:factory", cwd=tmp_path)
    assert result.returncode == 2 and "cannot import module" in result.stderr


def test_verification_failure_exits_1_with_json(tmp_path):
    (tmp_path / "strict.yaml").write_text("verify:\n  atol: 0.0\n")
    result = slmc("compile", "-r", "strict.yaml", "-o", "out", "--json", cwd=tmp_path)
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["verification"]["artifact_vs_eager"]["within_tolerance"] is False
    assert "verification failed" in result.stderr and not (tmp_path / "out").exists()


def test_debug_shows_a_traceback(tmp_path):
    result = slmc("--debug", "compile", "-m", "not-a-model", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" in result.stderr
    plain = slmc("compile", "-m", "not-a-model", cwd=tmp_path)
    assert "Traceback" not in plain.stderr


def test_usage_errors_exit_2(tmp_path):
    assert slmc("compile", "--no-such-flag", cwd=tmp_path).returncode == 2
    assert slmc("run", cwd=tmp_path).returncode == 2


def test_python_module_entry_point(tmp_path):
    result = subprocess.run([sys.executable, "-m", "slmc", "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and "slmc, version" in result.stdout
