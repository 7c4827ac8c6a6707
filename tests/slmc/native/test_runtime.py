"""The native model runtime (slmc/native/runtime) and ``slmc-run``, against slmc's Python paths.

The fixture LM is compiled once per module (the default compile) and the runtime built once per
session (cached by source hash). Greedy tokens of ``slmc-run`` and of the C API (through ctypes)
must equal ``slmc generate`` on the artifact and eager greedy decoding of the model; seeded
sampling must be reproducible; damaged or foreign artifacts must be refused with the file named.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

import slmc
from slmc.artifact.manifest import FORMAT_VERSION
from slmc.artifact.layout import read_manifest, sha256_file
from slmc.native.build import build_runtime

PROMPTS = ["Once upon a time", "import os\n", "The quick brown fox said: \u201chello\u201d"]
NEW_TOKENS = 32
CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int32, ctypes.POINTER(ctypes.c_char), ctypes.c_size_t)


class SamplingParams(ctypes.Structure):
    _fields_ = [("temperature", ctypes.c_float), ("top_k", ctypes.c_int32), ("top_p", ctypes.c_float),
                ("repetition_penalty", ctypes.c_float), ("seed", ctypes.c_uint64), ("max_new_tokens", ctypes.c_int32)]


class GenerationStats(ctypes.Structure):
    _fields_ = [("prompt_tokens", ctypes.c_int32), ("generated_tokens", ctypes.c_int32), ("ttft_seconds", ctypes.c_double),
                ("prefill_seconds", ctypes.c_double), ("decode_seconds", ctypes.c_double),
                ("stopped_at_eos", ctypes.c_int32), ("stopped_at_context", ctypes.c_int32)]


@pytest.fixture(scope="module")
def runtime():
    return build_runtime()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("native-runtime") / "fixture-lm-host"
    return slmc.compile(None, "cleanup", "host", out).artifact


@pytest.fixture(scope="module")
def lib(runtime):
    library = ctypes.CDLL(str(runtime.library))
    library.slmc_model_open.restype = ctypes.c_void_p
    library.slmc_model_open.argtypes = [ctypes.c_char_p]
    library.slmc_generate.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(SamplingParams),
                                      CALLBACK, ctypes.c_void_p]
    library.slmc_model_reset.argtypes = [ctypes.c_void_p]
    library.slmc_model_close.argtypes = [ctypes.c_void_p]
    library.slmc_model_last_stats.argtypes = [ctypes.c_void_p, ctypes.POINTER(GenerationStats)]
    library.slmc_model_eos_id.argtypes = [ctypes.c_void_p]
    library.slmc_default_sampling_params.restype = SamplingParams
    library.slmc_last_error.restype = ctypes.c_char_p
    return library


def run_cli(runtime, artifact, prompt, *flags):
    return subprocess.run([str(runtime.executable), str(artifact), "--prompt", prompt, *flags],
                          capture_output=True, text=True, timeout=120)


def native_json(runtime, artifact, prompt, *flags):
    result = run_cli(runtime, artifact, prompt, "--json", *flags)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def until_eos(tokens, eos):
    """Python's greedy loop does not stop at eos (``slmc generate`` passes no stop token); the
    native runtime does, so compare up to and including the first eos."""
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


def generate_python(artifact, prompt):
    from slmc.cli.main import cli

    result = CliRunner().invoke(cli, ["generate", str(artifact), "-p", prompt, "-n", str(NEW_TOKENS), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


class Model:
    """An opened artifact through the C API."""

    def __init__(self, lib, artifact):
        self.lib = lib
        self.handle = lib.slmc_model_open(str(artifact).encode())
        assert self.handle, lib.slmc_last_error().decode()

    def generate(self, prompt, **params):
        p = self.lib.slmc_default_sampling_params()
        p.max_new_tokens = NEW_TOKENS
        for name, value in params.items():
            setattr(p, name, value)
        seen = []

        def on_token(_user, token, text, length):
            seen.append((token, ctypes.string_at(text, length).decode("utf-8")))
            return 0

        data = prompt.encode()
        rc = self.lib.slmc_generate(self.handle, data, len(data), ctypes.byref(p), CALLBACK(on_token), None)
        assert rc == 0, self.lib.slmc_last_error().decode()
        return seen

    def stats(self):
        s = GenerationStats()
        assert self.lib.slmc_model_last_stats(self.handle, ctypes.byref(s)) == 0
        return s

    def close(self):
        self.lib.slmc_model_close(self.handle)


def test_weights_are_64_byte_aligned_and_eos_is_recorded(artifact):
    import struct

    with (artifact / "weights.safetensors").open("rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    assert (8 + n) % 64 == 0
    assert all(entry["data_offsets"][0] % 64 == 0 for entry in header.values())
    assert read_manifest(artifact).tokenizer.eos_token == "<|endoftext|>"


@pytest.mark.parametrize("prompt", PROMPTS)
def test_slmc_run_greedy_equals_slmc_generate_and_eager_decoding(runtime, artifact, prompt):
    from slmc.frontend.model_source import load_model
    from slmc.graph.kv_cache import eager_step, generate_greedy

    native = native_json(runtime, artifact, prompt, "--max-new-tokens", str(NEW_TOKENS))
    python = generate_python(artifact, prompt)
    spec = load_model("fixture-lm")
    spec.module.eval()
    eager = generate_greedy(eager_step(spec.module), spec.kv_cache, spec.tokenizer.encode(prompt), NEW_TOKENS).tokens
    eos = spec.tokenizer.token_id("<|endoftext|>")
    assert native["prompt_tokens"] == python["prompt_tokens"]
    assert native["tokens"] == until_eos(python["tokens"], eos) == until_eos(eager, eos)
    assert native["stopped_at_eos"] == (eos in python["tokens"])
    assert native["text"] == spec.tokenizer.decode(native["tokens"])
    assert native["generated_tokens"] == len(native["tokens"])
    assert native["ttft_ms"] > 0 and native["decode_tokens_per_s"] > 0 and native["prefill_tokens_per_s"] > 0
    assert native["peak_rss_bytes"] > 0
    assert len(native["token_ms"]) == native["generated_tokens"] - 1 and all(ms > 0 for ms in native["token_ms"])


@pytest.fixture(scope="module")
def compiled_vm_artifact(tmp_path_factory):
    """The fixture LM with the descriptor's ``vm: compiled`` (TVM's exec_mode "compiled": VM functions as LLVM; the
    compiled-mode tests live here to share this module's bytecode ``artifact``: one extra compile)."""
    from slmc.spec.target import load_target

    out = tmp_path_factory.mktemp("native-runtime-vm") / "fixture-lm-host-compiled-vm"
    return slmc.compile(None, "cleanup", load_target("host").model_copy(update={"vm": "compiled"}), out).artifact


def _vm_functions(artifact):
    """{name: kind} of the VM functions of the artifact's executable (``VMExecutable.as_text``'s headers)."""
    import tvm
    from tvm.relax import VMExecutable

    text = VMExecutable(tvm.runtime.load_module(str(artifact / "model.so"))).as_text()
    heads = [line.split() for line in text.splitlines() if line.startswith("@") and "num_inputs=" in line]
    return {head[0].lstrip("@").rstrip(":"): head[-1].rstrip(";") for head in heads}


def test_the_vms_compiled_mode_leaves_no_bytecode_function(artifact, compiled_vm_artifact):
    """slmc.backend.lowering.build with ``vm: compiled``: every function (``resident_step`` too) is TIR/LLVM."""
    compiled = _vm_functions(compiled_vm_artifact)
    assert {"main", "resident_all", "resident_last", "resident_step"} <= compiled.keys()
    assert set(compiled.values()) == {"vm_tir_func"}
    assert "vm_tir_func" not in _vm_functions(artifact).values()


def _greedy_logits(artifact, steps):
    """The prompt's logits (``resident_all``/``resident_last``), then ``steps`` greedy one-token steps' (``resident_step``)."""
    import numpy as np

    model = slmc.load(artifact)
    decoder = model.decoder()
    decoder.reset()
    logits = [np.asarray(decoder.feed(np.asarray([model.tokenizer.encode(PROMPTS[0])], dtype=np.int64)))]
    for _ in range(steps):
        token = int(np.argmax(logits[-1][0, -1]))
        logits.append(np.asarray(decoder.feed(np.asarray([[token]], dtype=np.int64))))
    return logits


def test_the_vms_compiled_mode_gives_the_bytecodes_logits_bit_for_bit(artifact, compiled_vm_artifact):
    """The same kernels; only the calls between them are compiled. Tolerance: none (bit-exact); measured: equal here
    and on a 4-layer SmolLM-135M-width W4A8 model (prefill at 128, 8 steps; docs/dev-notes.md, session 12)."""
    import numpy as np

    bytecode, compiled = _greedy_logits(artifact, 6), _greedy_logits(compiled_vm_artifact, 6)
    assert len(compiled) == 7
    for step, (b, c) in enumerate(zip(bytecode, compiled)):
        assert b.shape == c.shape and np.array_equal(b, c), f"step {step}"


def test_slmc_run_runs_the_vms_compiled_functions_to_the_python_runtimes_tokens(runtime, artifact, compiled_vm_artifact):
    """TVM's C++ VM loads the compiled functions (``__vmtir__*`` in model.so) through the same executable loader."""
    prompt = PROMPTS[0]
    native = native_json(runtime, compiled_vm_artifact, prompt, "--max-new-tokens", str(NEW_TOKENS))
    assert native["tokens"] == native_json(runtime, artifact, prompt, "--max-new-tokens", str(NEW_TOKENS))["tokens"]
    assert native["prompt_tokens"] == generate_python(compiled_vm_artifact, prompt)["prompt_tokens"]


def test_a_short_generation_keeps_the_kv_cache_at_the_context_used(runtime, artifact):
    """Issue 18's bound counts the KV cache at the context used: the runner asks for huge pages only when the
    context fills about the pages they would make resident (slmc/native/runtime/kv_pages.hpp), so a few tokens
    keep 4 KB pages (also where THP is "always") and the cache's resident pages are the slots written, to a
    page per (layer, head) row of keys and values."""
    native = native_json(runtime, artifact, PROMPTS[0], "-n", "4", "--ignore-eos")
    cache = read_manifest(artifact).kv_cache
    rows = 2 * cache.layers * cache.kv_heads
    assert native["kv_cache_huge_pages"] is False
    assert native["kv_cache_bytes"] < native["kv_cache_reserved_bytes"] / 8
    assert 0 < native["rss_at_end_bytes"]["kv_cache"] <= native["kv_cache_bytes"] + rows * 4096


@pytest.fixture(scope="module")
def long_cache_artifact(tmp_path_factory):
    """A 2-layer Llama whose resident cache holds 4 MiB of keys and 4 MiB of values (2 layers x 4 KV heads x
    2,048 slots x 64 floats): two whole huge pages each, so the page rule decides (fixture-lm's cache is
    under one huge page: the rule never gets to ask)."""
    import torch
    import transformers

    from slmc.bench.models import write_bench_tokenizer
    from slmc.models.huggingface import load_hf_model

    folder = tmp_path_factory.mktemp("long-cache-llama")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=4096, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=LONG_SLOTS - 1,
                                      tie_word_embeddings=True, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    write_bench_tokenizer(folder / "tokenizer.json", config.vocab_size)
    spec = load_hf_model(folder, max_context=LONG_SLOTS - 1)
    return slmc.compile(spec, "cleanup", "host", folder / "artifact").artifact


LONG_SLOTS = 2048  # max_context + the sink slot


def bench_json(runtime, artifact, prompt_tokens, new_tokens):
    done = subprocess.run([str(runtime.executable), str(artifact), "--json", "--bench-prompt-tokens", str(prompt_tokens),
                           "--max-new-tokens", str(new_tokens), "--ignore-eos"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# slow: its setup is a compile of a model of its own (~20 s CPU; 50 s wall at load 7, 165 s at load 13; the same at
# max_context 255, so the 2,047 slots cost nothing there); the call is 1.4 s. CI's command runs slow tests too.
@pytest.mark.slow
def test_the_page_rule_decides_on_a_cache_of_whole_huge_pages(runtime, long_cache_artifact):
    """kv_pages.hpp at a size where it matters: with the cache 4 MiB per tensor (2 huge pages), a short context
    keeps 4 KB pages (huge pages would make all 8 MiB resident for a few slots) and its resident cache is the
    slots written, to a page per (layer, head) row; a context filling the rows to within 1/64 asks for huge
    pages (page rounding is all they cost there)."""
    cache = read_manifest(long_cache_artifact).kv_cache
    rows = 2 * cache.layers * cache.kv_heads
    assert cache.max_context + 1 == LONG_SLOTS and cache.layers * cache.kv_heads * LONG_SLOTS * cache.head_dim * 4 == 4 << 20
    short = bench_json(runtime, long_cache_artifact, 8, 4)
    assert short["kv_cache_huge_pages"] is False
    assert 0 < short["rss_at_end_bytes"]["kv_cache"] <= short["kv_cache_bytes"] + rows * 4096
    full = bench_json(runtime, long_cache_artifact, LONG_SLOTS - 12, 4)
    assert full["kv_cache_huge_pages"] is True
    assert full["kv_cache_bytes"] > full["kv_cache_reserved_bytes"] * 63 / 64


def test_slmc_run_streams_the_prompt_and_text(runtime, artifact):
    native = native_json(runtime, artifact, PROMPTS[0], "-n", "12")
    streamed = run_cli(runtime, artifact, PROMPTS[0], "-n", "12")
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == PROMPTS[0] + native["text"] + "\n"


def test_c_api_callback_sees_every_token_in_order_and_reset_repeats(lib, runtime, artifact):
    prompt = PROMPTS[1]
    expected = native_json(runtime, artifact, prompt)["tokens"]
    model = Model(lib, artifact)
    try:
        first = model.generate(prompt)
        assert [t for t, _ in first] == expected
        stats = model.stats()
        assert stats.generated_tokens == len(expected) and stats.prompt_tokens > 0
        streamed = "".join(text for _, text in first)
        assert expected_text_prefix(streamed, native_json(runtime, artifact, prompt)["text"])
        continued = model.generate(" and")  # continues the conversation: the context now holds both turns
        assert continued
        assert lib.slmc_model_reset(model.handle) == 0
        assert [t for t, _ in model.generate(prompt)] == expected
    finally:
        model.close()


def expected_text_prefix(streamed: str, full: str) -> bool:
    """Streamed text equals the full decode except for a trailing incomplete character."""
    return full.startswith(streamed) and len(full) - len(streamed) <= 1


def test_seeded_sampling_is_reproducible(lib, artifact):
    model = Model(lib, artifact)
    params = dict(temperature=1.0, top_k=50, top_p=0.95, repetition_penalty=1.1)
    try:
        runs = {}
        for seed in (1, 1, 2):
            model.lib.slmc_model_reset(model.handle)
            runs.setdefault(seed, []).append([t for t, _ in model.generate(PROMPTS[0], seed=seed, **params)])
        assert runs[1][0] == runs[1][1]
        assert runs[1][0] != runs[2][0]
        greedy = [t for t, _ in model.generate(PROMPTS[0])]
        assert greedy != runs[1][0]
    finally:
        model.close()


def test_slmc_run_flags_reach_the_sampler(runtime, artifact):
    flags = ["--temperature", "0.8", "--top-k", "20", "--top-p", "0.9", "--repetition-penalty", "1.2", "--seed", "7"]
    assert native_json(runtime, artifact, PROMPTS[0], *flags)["tokens"] == native_json(runtime, artifact, PROMPTS[0], *flags)["tokens"]
    bad = run_cli(runtime, artifact, PROMPTS[0], "--top-p", "0")
    assert bad.returncode == 1 and "top_p must lie in (0, 1]" in bad.stderr


def test_an_unaligned_weight_file_of_older_artifacts_still_runs(runtime, artifact, tmp_path):
    from safetensors.numpy import load_file, save_file

    copy = tmp_path / "old"
    shutil.copytree(artifact, copy)
    weights = load_file(str(copy / "weights.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("__slmc_pad_")}, str(copy / "weights.safetensors"))
    manifest = json.loads((copy / "manifest.json").read_text())  # as an older slmc wrote it: raw JSON, not the model
    path = copy / "weights.safetensors"
    manifest["files"]["weights.safetensors"] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert native_json(runtime, copy, PROMPTS[0])["tokens"] == native_json(runtime, artifact, PROMPTS[0])["tokens"]


def test_a_weight_stored_under_another_name_is_read_through_weights_aliases(runtime, artifact, tmp_path):
    """A parameter named in ``weights.aliases`` has no tensor of its own: the runtime reads the one it maps to."""
    from slmc.artifact.aligned_safetensors import map_tensors, save_aligned

    copy = tmp_path / "aliased"
    shutil.copytree(artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    order = manifest["weights"]["order"]
    path = copy / "weights.safetensors"
    tensors = {name: array.copy() for name, array in map_tensors(path, order).items()}
    moved = order[-1]
    tensors["stored_once"] = tensors.pop(moved)
    save_aligned(tensors, path)
    manifest["weights"]["aliases"] = {moved: "stored_once"}
    manifest["files"]["weights.safetensors"] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert native_json(runtime, copy, PROMPTS[0])["tokens"] == native_json(runtime, artifact, PROMPTS[0])["tokens"]
    assert slmc.load(copy).generate(PROMPTS[0], max_new_tokens=8) == slmc.load(artifact).generate(PROMPTS[0], max_new_tokens=8)


def test_a_corrupted_weight_byte_is_refused_naming_the_file(runtime, artifact, tmp_path):
    copy = tmp_path / "corrupt"
    shutil.copytree(artifact, copy)
    path = copy / "weights.safetensors"
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = run_cli(runtime, copy, "hi", "--json")
    assert result.returncode == 1
    assert f"{copy}/weights.safetensors: sha256 differs from the manifest" in result.stderr
    assert json.loads(result.stdout)["ok"] is False


def test_a_missing_artifact_directory_is_reported_through_last_error(lib, tmp_path):
    missing = tmp_path / "nowhere"
    assert not lib.slmc_model_open(str(missing).encode())
    assert lib.slmc_last_error().decode() == f"{missing}: no such artifact directory"


@pytest.mark.parametrize("version", [FORMAT_VERSION - 1, 99])
def test_a_manifest_of_another_format_version_is_refused(lib, artifact, tmp_path, version):
    copy = tmp_path / "other"
    shutil.copytree(artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = version
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert not lib.slmc_model_open(str(copy).encode())
    assert lib.slmc_last_error().decode() == (f"{copy}/manifest.json: unsupported manifest format_version {version}, "
                                              f"expected {FORMAT_VERSION}")


def test_an_empty_prompt_is_an_invalid_argument(lib, artifact):
    model = Model(lib, artifact)
    try:
        p = lib.slmc_default_sampling_params()
        rc = lib.slmc_generate(model.handle, b"", 0, ctypes.byref(p), CALLBACK(lambda *a: 0), None)
        assert rc == -1 and lib.slmc_last_error().decode() == "the prompt encodes to no tokens"
    finally:
        model.close()


def unpack_tokenizer(artifact: Path, out: Path) -> Path:
    """A copy of ``artifact`` with its tokenizer stored uncompressed (manifest updated), as a bundle
    for a target whose build has no zlib ships it (docs/runtime.md)."""
    import gzip

    shutil.copytree(artifact, out)
    manifest = json.loads((out / "manifest.json").read_text())
    packed = manifest["tokenizer"]["file"]
    plain = packed.removesuffix(".gz")
    (out / plain).write_bytes(gzip.decompress((out / packed).read_bytes()))
    (out / packed).unlink()
    del manifest["files"][packed]
    manifest["files"][plain] = {"sha256": sha256_file(out / plain), "size": (out / plain).stat().st_size}
    manifest["tokenizer"]["file"] = plain
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.mark.slow
def test_aarch64_cross_build_generates_the_hosts_tokens_under_qemu(runtime, artifact, tmp_path):
    """Timing from emulation means nothing: only the tokens are compared."""
    from slmc.native.build import download_tvm_wheels

    for tool in ("aarch64-linux-gnu-g++", "qemu-aarch64-static"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} missing: apt-get install -y g++-aarch64-linux-gnu qemu-user-static")
    wheels = download_tvm_wheels("manylinux_2_28_aarch64")
    cross = build_runtime("aarch64-linux-gnu-g++", wheels)
    arm = slmc.compile(None, "cleanup", "arm-cortex-a76", tmp_path / "fixture-lm-a76").artifact
    bundle = unpack_tokenizer(arm, tmp_path / "bundle")
    env = {"LD_LIBRARY_PATH": ":".join(map(str, wheels.lib_dirs)), "PATH": "/usr/bin:/bin"}
    for prompt in PROMPTS[:2]:
        result = subprocess.run(["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu", str(cross.executable), str(bundle),
                                 "--prompt", prompt, "--json"], capture_output=True, text=True, timeout=600, env=env)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["tokens"] == native_json(runtime, artifact, prompt)["tokens"]


@pytest.fixture(scope="module", params=["int8", "float16"])
def stored_cache_artifact(request, tmp_path_factory):
    """The fixture LM with its KV cache stored in int8 or float16 (examples/recipes/kv-int8.yaml, kv-float16.yaml;
    issue 20.2, issue 22)."""
    recipe = Path(__file__).resolve().parents[3] / "examples" / "recipes" / f"kv-{request.param}.yaml"
    out = tmp_path_factory.mktemp(f"native-runtime-{request.param}") / f"fixture-lm-kv-{request.param}"
    return request.param, slmc.compile(None, str(recipe), "host", out).artifact


def test_slmc_run_with_a_stored_cache_dtype_generates_the_python_runtimes_tokens(runtime, stored_cache_artifact):
    dtype, artifact = stored_cache_artifact
    manifest = read_manifest(artifact)
    assert manifest.kv_cache.dtype == dtype and manifest.kv_cache.mode == "resident"
    for prompt in PROMPTS[:2]:
        native = native_json(runtime, artifact, prompt, "--max-new-tokens", str(NEW_TOKENS))
        python = generate_python(artifact, prompt)
        eos = slmc.load(artifact).tokenizer.token_id("<|endoftext|>")
        assert native["tokens"] == until_eos(python["tokens"], eos)


def test_a_kv_cache_dtype_the_runtime_does_not_know_is_refused(lib, artifact, tmp_path):
    copy = tmp_path / "bf16-cache"
    shutil.copytree(artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["kv_cache"]["dtype"] = "bfloat16"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert not lib.slmc_model_open(str(copy).encode())
    assert "kv_cache.dtype" in lib.slmc_last_error().decode()


def test_evict_bytes_writes_between_tokens_and_times_each_step_from_the_end_of_the_write(runtime, artifact):
    """``--evict-bytes`` (slmc bench --evict-llc): the same tokens, one step time per token after the first, the
    buffer's size reported and in the peak RSS (no timing asserted); a negative size is a usage error."""
    plain = native_json(runtime, artifact, PROMPTS[0], "-n", "4", "--ignore-eos")
    evicted = native_json(runtime, artifact, PROMPTS[0], "-n", "4", "--ignore-eos", "--evict-bytes", str(64 * 2**20))
    assert evicted["tokens"] == plain["tokens"] and plain["evict_bytes"] == 0 and evicted["evict_bytes"] == 64 * 2**20
    assert len(evicted["token_ms"]) == 3 and all(ms > 0 for ms in evicted["token_ms"])
    assert evicted["peak_rss_bytes"] > plain["peak_rss_bytes"] + 60 * 2**20  # the buffer is this process's
    bad = run_cli(runtime, artifact, PROMPTS[0], "--evict-bytes", "-1")
    assert bad.returncode == 2 and "--evict-bytes takes a size of at least 0 bytes" in bad.stderr
