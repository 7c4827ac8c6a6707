"""Decoder families a user may bring, compiled from a checkpoint folder through the CLI and checked against transformers.

Each family is a tiny random config of the installed transformers (2 layers, hidden 64, vocab 4096 = the
fixture LM's tokenizer, whose ``tokenizer.json`` the folder reuses; every linear dimension a multiple of 32),
saved with ``save_pretrained``. ``slmc compile -m FOLDER`` must verify, its artifact's logits must be within
1e-3 of the unwrapped transformers model and 8 greedy tokens identical to ``generate()``; an int4 g32 RTN
compile must verify against its eager fake-quant graph. The pass matrix runs every pass on the traced
graph (``slmc.driver.compress``, no TVM build): each pass either works or is refused with a ``PassError``
naming the node and why.

With ``SLMC_COMPAT_RESULTS=PATH`` every outcome is merged into the JSON file PATH, which
``python -m slmc.models.compat_table PATH`` renders into docs/models.md.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from click.testing import CliRunner

import slmc
from slmc.cli.main import cli
from slmc.driver.compress import compress, trace_and_calibrate
from slmc.errors import PassError
from slmc.graph.kv_cache import generate_greedy
from slmc.models import FIXTURE_DIR
from slmc.models.huggingface import load_hf_model
from slmc.spec.recipe import recipe_from_document
from slmc.spec.target import load_target
from slmc.spec.yaml_source import parse_yaml

NO_SPECIAL_IDS = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None)  # generate() never stops early
SHARED = dict(vocab_size=4096, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256,
              intermediate_size=128, **NO_SPECIAL_IDS)

# family -> (config class, settings beyond SHARED, what the config exercises)
FAMILIES = {
    "llama": ("LlamaConfig", dict(num_key_value_heads=2, tie_word_embeddings=True), "SmolLM2 / Llama-3.2 style: GQA, tied head"),
    "qwen2": ("Qwen2Config", dict(num_key_value_heads=2), "QKV biases, GQA"),
    "qwen3": ("Qwen3Config", dict(num_key_value_heads=2, head_dim=32), "QK-norm, head_dim != hidden/heads"),
    "gemma": ("GemmaConfig", dict(num_key_value_heads=1, head_dim=32), "MQA, scaled embeddings, (1 + w) RMSNorm"),
    # Soft caps small enough to bind on random weights (a missing cap moves the logits by > 1e-3, measured).
    "gemma2": ("Gemma2Config", dict(num_key_value_heads=2, head_dim=32, sliding_window=4, attn_logit_softcapping=0.001,
                                    final_logit_softcapping=0.3),
               "interleaved local/global attention, attention and logit soft-capping"),
    "gemma3_text": ("Gemma3TextConfig", dict(num_key_value_heads=2, head_dim=32, sliding_window=4,
                                             layer_types=["sliding_attention", "full_attention"]),
                    "interleaved local/global attention with two RoPE bases, QK-norm"),
    "mistral": ("MistralConfig", dict(num_key_value_heads=2, sliding_window=4), "sliding window on every layer"),
    "phi3": ("Phi3Config", dict(num_key_value_heads=2), "fused qkv_proj and gate_up_proj"),
    "phi": ("PhiConfig", dict(partial_rotary_factor=0.5), "Phi-2: parallel attention/MLP, partial rotary, biases"),
    "gpt_neox": ("GPTNeoXConfig", dict(rotary_pct=0.25), "Pythia: parallel residual, fused QKV, partial rotary"),
    "opt": ("OPTConfig", dict(ffn_dim=128, word_embed_proj_dim=64), "learned absolute positions with offset 2"),
    "olmo2": ("Olmo2Config", dict(num_key_value_heads=2), "QK-norm over all heads, post-norms"),
    "granite": ("GraniteConfig", dict(num_key_value_heads=2), "embedding/residual/logit multipliers"),
    "stablelm": ("StableLmConfig", dict(num_key_value_heads=2), "LayerNorm, partial rotary"),
    "smollm3": ("SmolLM3Config", dict(num_key_value_heads=2), "NoPE layers"),
    "gpt2": ("GPT2Config", None, "learned positions, Conv1D linears, fused c_attn"),
}
FAST = ("llama", "qwen3", "mistral")  # the rest are slow (two TVM compiles each, about 40 s on 2 idle cores)
# Families whose artifact appends to a resident KV cache (slmc.schedules.resident_kv): grouped-query attention,
# q/k/v biases (qwen2) and q/k norms (qwen3) included.
RESIDENT = ("llama", "qwen2", "qwen3", "mistral")
PROMPT = "import os\nimport sys\n\ndef main(argv):\n"
INT4 = "passes:\n  - quantize: {bits: 4, group_size: 32, method: rtn}\n"
CALIBRATION = "calibration: {text: stdlib-train, num_samples: 4, sequence_length: 32}\n"
PASS_RECIPES = {
    "quantize rtn": "- quantize: {bits: 4, group_size: 32, method: rtn}",
    "quantize gptq": "- quantize: {bits: 4, group_size: 32, method: gptq}",
    "quantize awq": "- quantize: {bits: 4, group_size: 32, method: awq, awq: {grid: 4}}",
    "quantize w8a8": "- quantize: {scheme: w8a8}",
    "prune": "- prune: {method: wanda, sparsity: 0.5}",
    "prune_channels": "- prune_channels: {mlp_channels: 0.25, heads: 0.5}",
    "lowrank": "- lowrank: {method: svd, ratio: 0.2}",
    "fuse": "- fuse: {merge_siblings: true}",
    "recover": "- prune: {method: magnitude, sparsity: 0.5}\n  - recover: {steps: 2, samples_per_step: 2}",
    "rotate": "- rotate: {}",  # not yet a column of docs/models.md (slmc.models.compat_table.PASSES)
}


def _params(families):
    return [pytest.param(f, marks=[] if f in FAST else [pytest.mark.slow]) for f in families]


def family_config(family: str) -> transformers.PretrainedConfig:
    class_name, extra, _ = FAMILIES[family]
    cls = getattr(transformers, class_name)
    if extra is None:  # GPT-2 names its sizes differently
        return cls(vocab_size=4096, n_embd=64, n_layer=2, n_head=4, n_positions=256, **NO_SPECIAL_IDS)
    return cls(**SHARED, **extra)


def family_folder(family: str, folder: Path) -> torch.nn.Module:
    """A seeded random checkpoint of ``family`` in ``folder`` with the fixture's tokenizer; returns the model."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = family_config(family)
    torch.manual_seed(0)
    model = getattr(transformers, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type])(config).eval()
    model.save_pretrained(folder)
    shutil.copyfile(FIXTURE_DIR / "tokenizer.json", folder / "tokenizer.json")
    return model


RESULTS: dict[str, dict] = {}


@pytest.fixture(scope="module", autouse=True)
def _record_results():
    """Merge this run's outcomes into ``$SLMC_COMPAT_RESULTS`` (when set)."""
    yield
    path = os.environ.get("SLMC_COMPAT_RESULTS")
    if not path or not RESULTS:
        return
    target = Path(path)
    merged = json.loads(target.read_text()) if target.is_file() else {"transformers": transformers.__version__, "families": {}}
    merged["transformers"] = transformers.__version__
    for family, outcome in RESULTS.items():
        merged["families"].setdefault(family, {}).update(outcome)
    target.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")


def _record(family: str, **outcome) -> None:
    class_name, _, exercises = FAMILIES[family]
    entry = RESULTS.setdefault(family, {"config": class_name, "exercises": exercises})
    entry.update(outcome)


def _compile(folder: Path, out: Path, recipe: Path | None = None) -> dict:
    args = ["compile", "-q", "--json", "-m", str(folder), "-o", str(out)] + (["-r", str(recipe)] if recipe else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("family", _params(FAMILIES))
def test_family_compiles_verifies_and_matches_transformers(family, tmp_path):
    folder = tmp_path / family
    hf = family_folder(family, folder)
    _record(family, transformers_class=type(hf).__name__)
    report = _compile(folder, tmp_path / "out")
    assert report["ok"] and report["verification"]["passed"] and report["verification"]["decode"]["same_tokens"]

    model = slmc.load(report["artifact"])
    _record(family, kv_cache=model.manifest.kv_cache.mode)
    if family in RESIDENT:
        assert model.manifest.kv_cache.mode == "resident", model.manifest.kv_cache.reason
    prompt = model.tokenizer.encode(PROMPT)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        reference = hf(ids).logits.numpy()
    error = float(abs(model.run_numpy(ids.numpy(), *model.kv_cache.empty())[0] - reference).max())
    ours = generate_greedy(model.decoder(), model.kv_cache, prompt, 8).tokens
    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8)[0, len(prompt):]
    _record(family, compile="ok", logits_max_abs_error=error, greedy_8_same=ours == theirs.tolist())
    assert error <= 1e-3, error
    assert ours == theirs.tolist()

    recipe = tmp_path / "int4.yaml"
    recipe.write_text(INT4)
    int4 = _compile(folder, tmp_path / "int4", recipe)
    verification = int4["verification"]
    _record(family, int4_g32="ok" if verification["passed"] else "failed")
    assert verification["passed"] and verification["artifact_vs_eager"]["within_tolerance"]


@pytest.mark.parametrize("family", _params(FAMILIES))
def test_every_pass_works_or_is_refused_with_a_reason(family, tmp_path):
    """Graph-level: each pass's compressed graph is checked by the pass manager (``check_graph``); a refusal
    is a ``PassError`` naming the node. Anything else is a bug."""
    family_folder(family, tmp_path / family)
    spec = load_hf_model(tmp_path / family)
    target = load_target("host")
    first = recipe_from_document(parse_yaml(f"passes:\n  {PASS_RECIPES['fuse']}\n{CALIBRATION}", "fuse"), Path.cwd())
    prepared = trace_and_calibrate(spec, first, target, {})
    outcomes = {}
    for name, steps in PASS_RECIPES.items():
        recipe = recipe_from_document(parse_yaml(f"passes:\n  {steps}\n{CALIBRATION}", name), Path.cwd())
        try:
            compressed = compress(spec, recipe, target, prepared=prepared)
        except PassError as exc:
            outcomes[name] = f"refused: {exc}"
            continue
        stats = compressed.reports[-1].get("stats", {})
        outcomes[name] = "ok"
        if name == "fuse":
            outcomes[name] = f"ok ({stats.get('sibling_groups_merged', 0)} sibling groups merged)"
    _record(family, passes=outcomes)
    assert all(o.startswith(("ok", "refused: ")) for o in outcomes.values()), outcomes


# ----------------------------------------------------------------------------- refused, in seconds


def _cli_error(folder: Path, tmp_path: Path) -> str:
    result = CliRunner().invoke(cli, ["compile", "-q", "-m", str(folder), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    return result.output


def test_encoder_decoder_is_refused_with_exit_2(tmp_path):
    config = transformers.T5Config(vocab_size=4096, d_model=64, d_kv=16, d_ff=128, num_layers=1, num_heads=4)
    transformers.T5ForConditionalGeneration(config).save_pretrained(tmp_path / "t5")
    assert "model_type 't5' is an encoder-decoder model" in _cli_error(tmp_path / "t5", tmp_path)


def test_trust_remote_code_is_refused_with_exit_2(tmp_path):
    family_folder("llama", tmp_path / "custom")
    config = json.loads((tmp_path / "custom" / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (tmp_path / "custom" / "config.json").write_text(json.dumps(config))
    output = _cli_error(tmp_path / "custom", tmp_path)
    assert "'auto_map' names custom modeling code" in output and "trust_remote_code" in output


def test_hybrid_layers_without_a_kv_cache_are_refused_with_exit_2(tmp_path):
    """LFM2's short-convolution layers keep a convolution state, not keys and values."""
    config = transformers.Lfm2Config(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, layer_types=["conv", "full_attention"],
                                     **NO_SPECIAL_IDS)
    transformers.Lfm2ForCausalLM(config).save_pretrained(tmp_path / "lfm2")
    assert "layers [0] are conv layers" in _cli_error(tmp_path / "lfm2", tmp_path)
