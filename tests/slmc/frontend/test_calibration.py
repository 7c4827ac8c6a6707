import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from slmc.frontend.calibration import load_calibration
from slmc.errors import InputError
from slmc.graph.ir import ModelSpec
from slmc.models import tiny_lm
from slmc.spec.recipe import load_recipe


def recipe_with(tmp_path, section):
    path = tmp_path / "r.yaml"
    path.write_text(f"calibration:\n{section}")
    return load_recipe(path)


def test_text_is_tokenized_into_windows(tmp_path):
    (tmp_path / "cal.txt").write_text("def f(x):\n    return x + 1\n" * 20)
    recipe = recipe_with(tmp_path, "  text: cal.txt\n  num_samples: 3\n  sequence_length: 32\n")
    samples = load_calibration(recipe, tiny_lm.build())
    assert len(samples) == 3
    assert all(s[0].shape == (1, 32) and s[0].dtype == torch.int64 for s in samples)
    assert bytes(samples[0][0][0].tolist()).decode() == ("def f(x):\n    return x + 1\n" * 2)[:32]


def test_text_shorter_than_one_window(tmp_path):
    (tmp_path / "cal.txt").write_text("tiny")
    recipe = recipe_with(tmp_path, "  text: cal.txt\n  sequence_length: 64\n")
    with pytest.raises(InputError, match="fewer than sequence_length 64"):
        load_calibration(recipe, tiny_lm.build())


def test_text_needs_a_tokenizer(tmp_path):
    (tmp_path / "cal.txt").write_text("hello " * 100)
    recipe = recipe_with(tmp_path, "  text: cal.txt\n")
    spec = ModelSpec(torch.nn.Identity(), (torch.zeros(1, 4, dtype=torch.int64),), name="no-tokenizer")
    with pytest.raises(InputError, match="has no tokenizer"):
        load_calibration(recipe, spec)


def test_npy_and_safetensors_tensors(tmp_path):
    np.save(tmp_path / "ids.npy", np.random.default_rng(0).integers(0, 256, (5, 1, 16)).astype(np.int64))
    samples = load_calibration(recipe_with(tmp_path, "  tensors: ids.npy\n  num_samples: 4\n"), tiny_lm.build())
    assert len(samples) == 4 and samples[0][0].shape == (1, 16)
    save_file({"input_ids": np.zeros((2, 1, 8), dtype=np.int64)}, str(tmp_path / "ids.safetensors"))
    samples = load_calibration(recipe_with(tmp_path, "  tensors: ids.safetensors\n"), tiny_lm.build())
    assert len(samples) == 2


def test_tensor_files_of_the_wrong_form(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((2, 1, 8), dtype=np.float32))
    with pytest.raises(InputError, match="must be a rank-3 array of int64"):
        load_calibration(recipe_with(tmp_path, "  tensors: f.npy\n"), tiny_lm.build())
    save_file({"other": np.zeros((2, 1, 8), dtype=np.int64)}, str(tmp_path / "o.safetensors"))
    with pytest.raises(InputError, match="lacks arrays for inputs \\['input_ids'\\]"):
        load_calibration(recipe_with(tmp_path, "  tensors: o.safetensors\n"), tiny_lm.build())
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(InputError, match="not a readable safetensors file"):
        load_calibration(recipe_with(tmp_path, "  tensors: junk.safetensors\n"), tiny_lm.build())


def test_causal_lm_samples_start_from_the_empty_cache(tmp_path):
    (tmp_path / "cal.txt").write_text("x = 1\n" * 50)
    samples = load_calibration(recipe_with(tmp_path, "  text: cal.txt\n  sequence_length: 16\n  num_samples: 2\n"), tiny_lm.build())
    ids, keys, values = samples[0]
    assert ids.shape == (1, 16) and keys.shape == values.shape == (2, 1, 4, 1, 32)
    assert not keys.any()


def test_built_in_text_set_gives_seeded_windows_from_several_documents(tmp_path):
    recipe = recipe_with(tmp_path, "  text: stdlib-train\n  num_samples: 4\n  sequence_length: 64\n  seed: 3\n")
    first = load_calibration(recipe, tiny_lm.build())
    again = load_calibration(recipe, tiny_lm.build())
    assert len(first) == 4 and all(s[0].shape == (1, 64) for s in first)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))  # seeded: identical across runs
    assert len({bytes(s[0][0].tolist()) for s in first}) == 4


def test_sentence_encoders_get_one_sentence_per_sample(tmp_path):
    from slmc.models.huggingface import load_hf_model, minilm_folder

    (tmp_path / "s.txt").write_text("The cat sat on the mat.\nA second, longer sentence about compilers.\n")
    recipe = recipe_with(tmp_path, "  text: s.txt\n  num_samples: 8\n  sequence_length: 8\n")
    samples = load_calibration(recipe, load_hf_model(minilm_folder()))
    assert len(samples) == 2
    for ids, mask in samples:
        assert ids.shape == mask.shape and ids.shape[1] <= 8 and bool(mask.all())


def test_stdlib_sentences_are_english_docstring_lines():
    from slmc.data.texts import load_texts

    lines = load_texts("stdlib-sentences-heldout")[0].splitlines()
    assert len(lines) > 100 and all(len(line.split()) >= 6 for line in lines)
