"""Which transformers class builds an encoder checkpoint (BERT, RoBERTa, DistilBERT, MPNet, ModernBERT, ...).

Support is by capability, as for decoders (``slmc.models.hf_decoders``): a folder is an encoder when
its ``model_type`` has a masked-language-model class in the installed transformers
(``AutoModelForMaskedLM``), it is not an encoder-decoder model, and neither ``is_decoder`` nor a
``*ForCausalLM`` entry of ``architectures`` says it was saved as a decoder. The encoder is built as
the family's base class (``AutoModel``'s, e.g. ``RobertaModel``) and pooled like sentence-transformers.
Whether its graph exports and builds is what decides, not its name: a failure names the module and op.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn


def encoder_class(config: dict[str, Any]) -> str | None:
    """The base-model class name for an encoder ``config.json`` (see the module docstring), else None."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_MASKED_LM_MAPPING_NAMES, MODEL_MAPPING_NAMES,
                                                        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return None
    if config.get("is_encoder_decoder") or model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        return None
    architectures = [a for a in config.get("architectures") or () if isinstance(a, str)]
    if config.get("is_decoder") or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return None
    name = MODEL_MAPPING_NAMES.get(model_type)
    return name if isinstance(name, str) else None


def explicit_inputs(model: nn.Module) -> tuple[bool, bool]:
    """Whether to pass ``(token_type_ids, position_ids)`` explicitly (zeros, ``0 .. S-1``).

    Explicit inputs spare the graph a slice of a registered buffer along the symbolic sequence
    length. Token types are passed where ``forward`` takes them; positions where ``forward`` takes
    them and the embeddings count them from 0 (RoBERTa-style embeddings with a ``padding_idx``
    derive them from the ids, skipping padding, so they are left to the model).
    """
    parameters = inspect.signature(model.forward).parameters
    embeddings = getattr(model, "embeddings", None)
    counts_from_zero = getattr(embeddings, "padding_idx", None) is None
    return "token_type_ids" in parameters, "position_ids" in parameters and counts_from_zero
