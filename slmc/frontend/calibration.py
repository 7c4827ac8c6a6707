"""Calibration samples from the recipe's ``calibration`` section, shaped like the model's inputs.

Text: tokenized with the model's tokenizer, cut into ``num_samples`` consecutive windows of
``sequence_length`` tokens, each a ``[1, sequence_length]`` int64 tensor (single-input models; a
causal LM gets each window as a prompt, with the empty KV cache).
Tensors: a ``.npy`` array ``[N, *input_shape]`` (single-input models, or the token ids of a causal
LM) or a ``.safetensors`` file with one ``[N, *input_shape]`` array per input name; the first
``num_samples`` are used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from slmc.errors import InputError
from slmc.graph.ir import ModelSpec
from slmc.spec.recipe import Recipe
from slmc.data.texts import is_text_set, load_texts, sentences

Sample = tuple[torch.Tensor, ...]


def _text_set_samples(name: str, spec: ModelSpec, count: int, length: int, seed: int) -> list[Sample]:
    """One window of ``length`` tokens from each of ``count`` documents of a built-in text set,
    documents and offsets drawn with ``seed`` (documents shorter than ``length`` are passed over)."""
    _check_text_model(spec)
    documents = load_texts(name)
    gen = torch.Generator().manual_seed(seed)
    samples: list[Sample] = []
    dtype = spec.example_inputs[0].dtype
    for index in torch.randperm(len(documents), generator=gen).tolist():
        ids = spec.encode_text(documents[index])
        if len(ids) < length:
            continue
        start = int(torch.randint(0, len(ids) - length + 1, (1,), generator=gen))
        samples.append((torch.tensor(ids[start:start + length], dtype=dtype).unsqueeze(0), *_empty_cache(spec)))
        if len(samples) == count:
            break
    if not samples:
        raise InputError(f"calibration.text: no document of text set '{name}' has sequence_length {length} tokens")
    return samples


def _sentence_samples(source: str | Path, spec: ModelSpec, count: int, length: int, seed: int) -> list[Sample]:
    """Sentence encoders: ``count`` lines of the text (drawn with ``seed``), each one sample
    ``(input_ids [1, S], attention_mask [1, S])`` with the tokenizer's special tokens, ``S <= length``."""
    _check_text_model(spec)
    lines = sentences(load_texts(source))
    order = torch.randperm(len(lines), generator=torch.Generator().manual_seed(seed)).tolist()[:count]
    encode = getattr(spec.tokenizer, "encode_document", spec.encode_text)
    samples = []
    for index in order:
        ids = torch.tensor(encode(lines[index])[:length], dtype=torch.int64).unsqueeze(0)
        samples.append((ids, torch.ones_like(ids)))
    return samples


def _check_text_model(spec: ModelSpec) -> None:
    if spec.encode_text is None:
        raise InputError(f"calibration.text: model '{spec.name}' has no tokenizer; give calibration.tensors instead")
    if len(spec.example_inputs) != 1 and spec.task not in ("causal-lm", "embedding"):
        raise InputError(f"calibration.text needs a single-input model or a causal LM; '{spec.name}' takes {len(spec.example_inputs)} inputs")


def _text_samples(path: Path, spec: ModelSpec, count: int, length: int) -> list[Sample]:
    _check_text_model(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"calibration.text: {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    ids = spec.encode_text(text)
    windows = len(ids) // length
    if windows == 0:
        raise InputError(f"calibration.text: {path} has {len(ids)} tokens, fewer than sequence_length {length}")
    dtype = spec.example_inputs[0].dtype
    rest = _empty_cache(spec)
    return [(torch.tensor(ids[i * length : (i + 1) * length], dtype=dtype).unsqueeze(0), *rest) for i in range(min(count, windows))]


def _fed_inputs(spec: ModelSpec) -> tuple[tuple[str, torch.Tensor], ...]:
    """The inputs calibration data supplies: all of them, or only the token ids of a causal LM."""
    pairs = tuple(zip(spec.names(), spec.example_inputs))
    return pairs[:1] if spec.task == "causal-lm" else pairs


def _tensor_arrays(path: Path, spec: ModelSpec) -> list[np.ndarray]:
    names = [name for name, _ in _fed_inputs(spec)]
    if path.suffix == ".npy":
        if len(names) != 1:
            raise InputError(f"calibration.tensors: a .npy file feeds single-input models; use .safetensors for {spec.names()}")
        try:
            return [np.load(path, allow_pickle=False)]
        except ValueError as exc:
            raise InputError(f"calibration.tensors: {path} is not a readable .npy array: {exc}") from exc
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        data = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise InputError(f"calibration.tensors: {path} is not a readable safetensors file: {exc}") from exc
    missing = [n for n in names if n not in data]
    if missing:
        raise InputError(f"calibration.tensors: {path} lacks arrays for inputs {missing} (has {sorted(data)})")
    return [data[n] for n in names]


def _tensor_samples(path: Path, spec: ModelSpec, count: int) -> list[Sample]:
    arrays = _tensor_arrays(path, spec)
    for array, (name, example) in zip(arrays, _fed_inputs(spec)):
        if array.ndim != example.ndim + 1 or str(array.dtype) != str(example.dtype).removeprefix("torch."):
            raise InputError(
                f"calibration.tensors: input '{name}' must be a rank-{example.ndim + 1} array of "
                f"{str(example.dtype).removeprefix('torch.')} (N samples, each shaped like {list(example.shape)}), "
                f"got {list(array.shape)} of {array.dtype}"
            )
    n = min(count, min(a.shape[0] for a in arrays))
    rest = _empty_cache(spec)
    return [tuple(torch.from_numpy(np.ascontiguousarray(a[i])) for a in arrays) + rest for i in range(n)]


def _empty_cache(spec: ModelSpec) -> tuple[torch.Tensor, ...]:
    """A causal LM sees each sample as a prompt, from the empty KV cache (``slmc.graph.kv_cache``)."""
    return tuple(torch.from_numpy(a) for a in spec.kv_cache.empty()) if spec.task == "causal-lm" else ()


def load_calibration(recipe: Recipe, spec: ModelSpec) -> list[Sample]:
    """The recipe's calibration samples for ``spec`` (empty when the recipe has none)."""
    cal = recipe.calibration
    if cal is None:
        return []
    if cal.text is not None and spec.task == "embedding":
        source = cal.text if is_text_set(cal.text) else recipe.resolve_path(cal.text)
        return _sentence_samples(source, spec, cal.num_samples, cal.sequence_length, cal.seed)
    if cal.text is not None and is_text_set(cal.text):
        return _text_set_samples(cal.text, spec, cal.num_samples, cal.sequence_length, cal.seed)
    if cal.text is not None:
        return _text_samples(recipe.resolve_path(cal.text), spec, cal.num_samples, cal.sequence_length)
    return _tensor_samples(recipe.resolve_path(cal.tensors), spec, cal.num_samples)
