"""The peer's side of ``benchmarks/peer_crosscheck.py``: llm-compressor's modifiers on the same checkpoint
and the same calibration tokens, run in the peer's own virtual environment (it imports nothing of slmc).

    PEER_PYTHON benchmarks/peer/llmcompressor_side.py --model WORK/model --calibration WORK/calibration.npy \\
        --method gptq --out WORK/peer/gptq

Loads the Hugging Face checkpoint in float32 on the CPU, runs ``llmcompressor.oneshot`` with the
method's recipe (below; every setting explicit, matched to slmc's recipe in ``peer_crosscheck.METHODS``)
on the calibration tokens (``[N, 1, L]`` or ``[N, L]`` int64, every window of full length, no padding),
then writes into ``--out``:

- ``weights.safetensors``: every tensor of the model under the checkpoint's names, with each
  quantized layer's weight replaced by compressed-tensors' ``fake_quantize`` of it with the
  layer's scales and zero points (the values the quantized model computes with), pruned layers
  with their zeros, smoothing scales folded where the modifier folded them;
- ``input_scales.json``: ``{layer: scale}`` of static activation quantization (w8a8 only);
- ``settings.json``: the recipe as llm-compressor serializes it and the package versions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

GROUP_SIZE = 32


def _int_weights(bits: int, strategy: str, group_size: int | None = None) -> dict[str, Any]:
    weights: dict[str, Any] = {"num_bits": bits, "type": "int", "symmetric": True, "strategy": strategy,
                               "dynamic": False, "observer": "minmax"}
    if group_size is not None:
        weights["group_size"] = group_size
    return weights


def _w4_group() -> dict[str, Any]:
    return {"group_0": {"targets": ["Linear"], "weights": _int_weights(4, "group", GROUP_SIZE)}}


def recipe(method: str) -> list[Any]:
    """llm-compressor modifiers for ``method`` (names as in ``peer_crosscheck.METHODS``)."""
    if method == "gptq":
        from llmcompressor.modifiers.quantization import GPTQModifier

        return [GPTQModifier(config_groups=_w4_group(), ignore=["lm_head"], block_size=128, dampening_frac=0.01,
                             actorder=None)]
    if method == "awq":
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform import AWQModifier

        return [AWQModifier(n_grid=20, duo_scaling=True), QuantizationModifier(config_groups=_w4_group(), ignore=["lm_head"])]
    if method == "smoothquant-w8a8":
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform import SmoothQuantModifier

        group = {"group_0": {"targets": ["Linear"], "weights": _int_weights(8, "channel"),
                             "input_activations": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "tensor",
                                                   "dynamic": False, "observer": "minmax"}}}
        return [SmoothQuantModifier(smoothing_strength=0.5), QuantizationModifier(config_groups=group, ignore=["lm_head"])]
    # The pruners match ``ignore`` against "lm_head." (the module's own name plus "."), so a plain "lm_head"
    # does not match and llm-compressor 0.14 prunes the head (it only warns); its documented "re:.*lm_head" does.
    if method == "sparsegpt-50":
        from llmcompressor.modifiers.pruning import SparseGPTModifier

        return [SparseGPTModifier(sparsity=0.5, mask_structure="0:0", block_size=128, dampening_frac=0.01,
                                  ignore=["re:.*lm_head"])]
    if method == "wanda-50":
        from llmcompressor.modifiers.pruning import WandaPruningModifier

        return [WandaPruningModifier(sparsity=0.5, mask_structure="0:0", ignore=["re:.*lm_head"])]
    raise SystemExit(f"unknown method {method!r}: gptq, awq, smoothquant-w8a8, sparsegpt-50, wanda-50")


def allow_cpu_only() -> None:
    """llm-compressor 0.14's AWQ pins its cached activations (``IntermediatesCache.pin_memory``) for faster
    host-to-device copies, which raises "Cannot access accelerator device when none is available" on a
    machine without one. Pinning changes no value, so on such a machine it is skipped."""
    from llmcompressor.pipelines.cache import IntermediatesCache

    if not torch.accelerator.is_available():
        IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None


def calibration_dataset(path: Path) -> tuple[Any, int, int]:
    from datasets import Dataset

    ids = np.load(path)
    ids = ids.reshape(ids.shape[0], -1).astype(np.int64)
    rows = {"input_ids": ids.tolist(), "attention_mask": np.ones_like(ids).tolist()}
    return Dataset.from_dict(rows), int(ids.shape[0]), int(ids.shape[1])


def dequantized_weights(model: torch.nn.Module, names: set[str]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The checkpoint's tensors after the modifiers (quantized weights fake-quantized), and static input scales."""
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize

    state = {k: v.detach().clone() for k, v in model.state_dict().items() if k in names}
    scales: dict[str, float] = {}
    for name, module in model.named_modules():
        scheme = getattr(module, "quantization_scheme", None)
        if scheme is None:
            continue
        if scheme.weights is not None:
            with torch.no_grad():
                state[f"{name}.weight"] = fake_quantize(module.weight, module.weight_scale, module.weight_zero_point,
                                                        scheme.weights)
        if scheme.input_activations is not None:
            if scheme.input_activations.dynamic or module.input_scale.numel() != 1:
                raise SystemExit(f"{name}: only static per-tensor activation scales are exported")
            if torch.any(module.input_zero_point != 0):
                raise SystemExit(f"{name}: asymmetric activation quantization is not exported")
            scales[name] = float(module.input_scale.reshape(()))
    missing = names - set(state)
    if missing:
        raise SystemExit(f"the model after the modifiers lacks checkpoint tensors {sorted(missing)[:5]}")
    return state, scales


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--calibration", type=Path, required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    from llmcompressor import oneshot
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    allow_cpu_only()
    with safe_open(str(args.model / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    model = AutoModelForCausalLM.from_pretrained(str(args.model), torch_dtype=torch.float32).eval()
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(args.model / "tokenizer.json"))
    dataset, samples, length = calibration_dataset(args.calibration)
    modifiers = recipe(args.method)
    t = time.perf_counter()
    oneshot(model=model, processor=tokenizer, dataset=dataset, recipe=modifiers, max_seq_length=length,
            num_calibration_samples=samples, shuffle_calibration_samples=False)
    seconds = time.perf_counter() - t
    state, scales = dequantized_weights(model, names)
    args.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.float32).contiguous() for k, v in state.items()}, str(args.out / "weights.safetensors"),
              metadata={"format": "pt"})
    if scales:
        (args.out / "input_scales.json").write_text(json.dumps(scales, indent=2))
    else:
        (args.out / "input_scales.json").unlink(missing_ok=True)
    zeros = {k: float((v == 0).float().mean()) for k, v in state.items() if k.endswith("proj.weight")}
    settings = {"method": args.method, "recipe": [repr(m) for m in modifiers], "calibration_samples": samples,
                "calibration_length": length, "seconds": seconds, "layers_with_input_scales": len(scales),
                "mean_zero_fraction_of_proj_weights": sum(zeros.values()) / max(len(zeros), 1),
                "lm_head_zero_fraction": float((state["lm_head.weight"] == 0).float().mean()) if "lm_head.weight" in state else None,
                "versions": {p: metadata.version(p) for p in ("llmcompressor", "compressed-tensors", "transformers", "torch")}}
    (args.out / "settings.json").write_text(json.dumps(settings, indent=2))
    print(json.dumps({k: settings[k] for k in ("method", "seconds", "versions")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
