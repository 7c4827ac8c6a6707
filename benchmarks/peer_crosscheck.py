"""Peer cross-check (issue 21.3): slmc's GPTQ, AWQ, SmoothQuant w8a8, SparseGPT and Wanda against
llm-compressor's, on the same model, the same calibration tokens and the same held-out tokens.

Both sides start from the trained fixture (``fixture-lm``, a 4.85M-parameter Llama shipped as a
Hugging Face checkpoint in ``slmc/models/fixture_lm``) and calibrate on one token tensor saved once
(``WORK/calibration.npy``, ``[64, 1, 256]`` int64: the 64 windows of 256 tokens of ``stdlib-train``
that the recipes of docs/quality.md draw, seed 0). Then:

- slmc's side: ``slmc.driver.compress`` runs the recipe written to ``WORK/recipes/METHOD.yaml``
  (calibration ``tensors: ../calibration.npy``), and the compressed graph is evaluated eagerly: the
  reference the compiled artifact is verified against, which is what ``slmc eval -r`` measures
  (``slmc eval fixture-lm -r WORK/recipes/METHOD.yaml --text stdlib-heldout --max-tokens 20000``
  gives the same number).
- the peer's side: ``benchmarks/peer/llmcompressor_side.py`` runs in the peer's own virtual
  environment (llm-compressor needs another transformers than slmc's) on a copy of the checkpoint
  (``WORK/model``) and the same tokens, and writes every weight of the model after its modifiers
  (quantized layers as their dequantized fake-quant values, pruned layers with their zeros,
  smoothing folded into the norms) plus, for w8a8, each layer's static input scale. This script
  puts those weights into a copy of the fixture's checkpoint, loads it with slmc's Hugging Face
  loader and evaluates it eagerly, with int8 fake quantization of each quantized layer's input
  (round half to even, clamp to [-128, 127], times the peer's scale: compressed-tensors' static
  symmetric per-tensor activation quantization) when the peer quantized activations.

One evaluator scores both: ``slmc.verify.evaluation.perplexity`` over the first ``--max-tokens``
tokens of ``stdlib-heldout`` (window 256, stride 128), as in docs/quality.md. A method more than
``--tolerance`` (1%) relative perplexity worse than its peer fails the run (exit 1).

The peer's environment (outside the repository; torch pinned to the local CPU wheel, else pip pulls
CUDA packages)::

    python -m venv /work/venvs/peer
    /work/venvs/peer/bin/pip install torch==2.13.0
    /work/venvs/peer/bin/pip install -c benchmarks/peer/constraints.txt -r benchmarks/peer/requirements.txt

Run (from the repository, with slmc's Python)::

    python benchmarks/peer_crosscheck.py --peer-python /work/venvs/peer/bin/python --work /tmp/peer-crosscheck
    python benchmarks/peer_crosscheck.py ... --methods gptq awq --max-tokens 3000   # a quicker subset
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slmc.errors import InputError

PEER_SIDE = Path(__file__).with_name("peer") / "llmcompressor_side.py"
CALIBRATION = "calibration.npy"
WINDOW, STRIDE = 256, 128


@dataclass(frozen=True)
class Method:
    """One row: slmc's pass (the recipe's ``passes`` entry, YAML flow style) and the settings both sides share."""

    name: str
    what: str
    slmc_pass: str
    settings: str


# lm_head stays float on both sides (llm-compressor's examples ignore it; slmc's prune excludes it by
# default); embeddings stay float on both (llm-compressor quantizes Linear modules only).
_NO_HEAD = 'exclude: ["*lm_head"], embeddings: false'
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("gptq", "int4 g32 weight-only, GPTQ",
           f"quantize: {{bits: 4, group_size: 32, symmetric: true, method: gptq, gptq: {{damp: 0.01, block_size: 128, "
           f"act_order: false}}, {_NO_HEAD}}}",
           "int4 symmetric, group 32, damp 0.01, block 128, no act-order, layers in order, lm_head float"),
    Method("awq", "int4 g32 weight-only, AWQ",
           f"quantize: {{bits: 4, group_size: 32, symmetric: true, method: awq, awq: {{grid: 20}}, {_NO_HEAD}}}",
           "int4 symmetric, group 32, scale grid 20, lm_head float"),
    Method("smoothquant-w8a8", "int8 weights + static int8 activations, SmoothQuant α=0.5",
           f"quantize: {{scheme: w8a8, smoothquant: {{alpha: 0.5}}, observer: minmax, {_NO_HEAD}}}",
           "weights int8 symmetric per output channel; activations int8 symmetric per tensor, static, min-max; "
           "α 0.5; lm_head float"),
    Method("sparsegpt-50", "50% unstructured, SparseGPT",
           'prune: {method: sparsegpt, sparsity: 0.5, block_size: 128, damping: 0.01, exclude: ["*lm_head"]}',
           "50% of every layer, unstructured, block 128, damp 0.01, sequential, lm_head dense"),
    Method("wanda-50", "50% unstructured, Wanda",
           'prune: {method: wanda, sparsity: 0.5, exclude: ["*lm_head"]}',
           "50% of every output row, unstructured, sequential, lm_head dense"),
)}


def fixture_folder() -> Path:
    from slmc.models import FIXTURE_DIR

    return FIXTURE_DIR


def calibration_tokens(samples: int, length: int) -> np.ndarray:
    """``[samples, 1, length]`` int64: the windows of ``stdlib-train`` docs/quality.md's recipes calibrate on."""
    from slmc.frontend.calibration import load_calibration
    from slmc.models import fixture_lm
    from slmc.spec.recipe import recipe_from_document
    from slmc.spec.yaml_source import parse_yaml

    text = f"passes: []\ncalibration: {{text: stdlib-train, num_samples: {samples}, sequence_length: {length}}}\n"
    recipe = recipe_from_document(parse_yaml(text, "<peer cross-check calibration>"), Path.cwd())
    return np.stack([sample[0].numpy() for sample in load_calibration(recipe, fixture_lm())])


def write_peer_checkpoint(folder: Path) -> None:
    """The fixture's checkpoint for transformers 4.x as well: ``rope_theta`` beside 5.x's ``rope_parameters``,
    and a tokenizer class 4.x knows (``tokenizer.json`` is the same file)."""
    shutil.copytree(fixture_folder(), folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    config["rope_theta"] = config["rope_parameters"]["rope_theta"]
    config["torch_dtype"] = config["dtype"]
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer["tokenizer_class"] = "PreTrainedTokenizerFast"
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer, indent=2))


def prepare(work: Path, samples: int, length: int) -> None:
    """``WORK/calibration.npy``, ``WORK/model`` (the checkpoint the peer loads) and ``WORK/recipes/*.yaml``."""
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / CALIBRATION, calibration_tokens(samples, length))
    write_peer_checkpoint(work / "model")
    (work / "recipes").mkdir(exist_ok=True)
    for method in METHODS.values():
        (work / "recipes" / f"{method.name}.yaml").write_text(recipe_text(method, samples))


def recipe_text(method: Method, samples: int) -> str:
    return (f"# Peer cross-check (benchmarks/peer_crosscheck.py): {method.what}; {method.settings}.\n"
            f"passes:\n  - {method.slmc_pass}\ncalibration: {{tensors: ../{CALIBRATION}, num_samples: {samples}}}\n")


def heldout_documents(tokenizer: Any, max_tokens: int | None) -> list[np.ndarray]:
    from slmc.data.texts import load_texts
    from slmc.verify.evaluation import document_tokens

    return document_tokens(load_texts("stdlib-heldout"), tokenizer, max_tokens)


def evaluate(module: torch.nn.Module, cache: Any, documents: list[np.ndarray]) -> float:
    """Perplexity of an eager module under the cache contract (slmc's held-out evaluation)."""
    from slmc.driver.eval_subject import eager_runner
    from slmc.verify.evaluation import perplexity

    run = eager_runner(module.eval())

    def step(ids: np.ndarray, keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        logits, new_keys, new_values = run(ids, keys, values)
        return logits, new_keys, new_values

    return float(perplexity(step, cache, documents, WINDOW, STRIDE)["perplexity"])


def slmc_side(work: Path, method: Method) -> tuple[torch.nn.Module, Any]:
    """The eager compressed graph and its KV cache after ``WORK/recipes/METHOD.yaml``."""
    from slmc.driver.compress import compress
    from slmc.models import fixture_lm
    from slmc.spec.recipe import check_against_target, load_recipe
    from slmc.spec.target import load_target

    recipe = load_recipe(work / "recipes" / f"{method.name}.yaml")
    target = load_target("host")
    check_against_target(recipe, target)
    compressed = compress(fixture_lm(), recipe, target)
    return compressed.final.module, compressed.kv_cache


def substituted_checkpoint(weights: dict[str, torch.Tensor], folder: Path) -> None:
    """A copy of the fixture's checkpoint with ``weights`` as its tensors: exactly the original's names and
    shapes, else ``InputError`` naming the first difference."""
    from safetensors.torch import load_file, save_file

    original = load_file(str(fixture_folder() / "model.safetensors"))
    missing, extra = sorted(set(original) - set(weights)), sorted(set(weights) - set(original))
    if missing or extra:
        raise InputError(f"the peer's weights differ from the fixture's tensors: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, tensor in original.items():
        if tuple(weights[name].shape) != tuple(tensor.shape):
            raise InputError(f"the peer's {name} is {list(weights[name].shape)}, the fixture's {list(tensor.shape)}")
    shutil.copytree(fixture_folder(), folder, dirs_exist_ok=True)
    save_file({k: v.to(torch.float32).contiguous() for k, v in weights.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})


def fake_quantize_inputs(module: torch.nn.Module, scales: dict[str, float]) -> list[str]:
    """Static symmetric int8 fake quantization of the inputs of the layers named in ``scales`` (Hugging Face
    names, ``model.layers.0.self_attn.q_proj``), as compressed-tensors applies a static per-tensor ``input_scale``;
    returns the layers hooked (``InputError`` for a name the model lacks)."""
    layers = dict(module.model.named_modules())
    unknown = sorted(set(scales) - set(layers))
    if unknown:
        raise InputError(f"activation scales name layers the model lacks: {unknown[:5]}")

    def hook(scale: float) -> Callable[..., tuple[torch.Tensor, ...]]:
        def quantize(_: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            return (torch.clamp(torch.round(args[0] / scale), -128, 127) * scale, *args[1:])

        return quantize

    for name, scale in scales.items():
        layers[name].register_forward_pre_hook(hook(float(np.float32(scale))))
    return sorted(scales)


def peer_side(work: Path, method: Method) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """The peer's result (``WORK/peer/METHOD``) as an eager model under the cache contract, and its settings."""
    from safetensors.torch import load_file

    from slmc.models.huggingface import load_hf_model

    out = work / "peer" / method.name
    checkpoint = out / "checkpoint"
    substituted_checkpoint(load_file(str(out / "weights.safetensors")), checkpoint)
    spec = load_hf_model(checkpoint)
    scales_file = out / "input_scales.json"
    scales = json.loads(scales_file.read_text()) if scales_file.is_file() else {}
    hooked = fake_quantize_inputs(spec.module, scales)
    settings = json.loads((out / "settings.json").read_text())
    settings["activation_fake_quant_layers"] = len(hooked)
    return spec.module, spec.kv_cache, settings


def run_peer(peer_python: Path, work: Path, method: Method) -> float:
    """Run the peer's side in its own environment; its wall time in seconds."""
    t = time.perf_counter()
    command = [str(peer_python), str(PEER_SIDE), "--model", str(work / "model"), "--calibration", str(work / CALIBRATION),
               "--method", method.name, "--out", str(work / "peer" / method.name)]
    print("+ " + " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True)
    return time.perf_counter() - t


def crosscheck(work: Path, peer_python: Path | None, names: list[str], max_tokens: int | None,
               tolerance: float) -> dict[str, Any]:
    """Every method's perplexity on both sides (``peer_python`` None: reuse the peer's results in ``WORK/peer``)."""
    from slmc.models import fixture_lm

    base = fixture_lm()
    documents = heldout_documents(base.tokenizer, max_tokens)
    result: dict[str, Any] = {"baseline": evaluate(base.module, base.kv_cache, documents),
                              "tokens": int(sum(len(d) for d in documents)), "rows": []}
    for name in names:
        method = METHODS[name]
        peer_seconds = run_peer(peer_python, work, method) if peer_python is not None else None
        t = time.perf_counter()
        module, cache = slmc_side(work, method)
        slmc_seconds = time.perf_counter() - t
        ours = evaluate(module, cache, documents)
        peer_module, peer_cache, settings = peer_side(work, method)
        theirs = evaluate(peer_module, peer_cache, documents)
        row = {"method": name, "what": method.what, "settings": method.settings, "slmc": ours, "peer": theirs,
               "slmc_vs_peer": ours / theirs - 1.0, "ok": ours <= theirs * (1.0 + tolerance),
               "slmc_seconds": slmc_seconds, "peer_seconds": peer_seconds, "peer_settings": settings}
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
    return result


def markdown(result: dict[str, Any]) -> str:
    base = result["baseline"]
    lines = [f"fp32 baseline {base:.4f} over {result['tokens']} held-out tokens", "",
             "| method | settings (both sides) | slmc | peer | slmc vs peer |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['what']} | {r['settings']} | {r['slmc']:.4f} ({r['slmc'] / base - 1:+.2%}) | "
                     f"{r['peer']:.4f} ({r['peer'] / base - 1:+.2%}) | {r['slmc_vs_peer']:+.2%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for the checkpoint, tokens, recipes and results")
    parser.add_argument("--peer-python", type=Path, default=None,
                        help="the peer environment's python; without it, reuse the peer results already in WORK/peer")
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    parser.add_argument("--samples", type=int, default=64, help="calibration windows")
    parser.add_argument("--length", type=int, default=256, help="tokens per calibration window")
    parser.add_argument("--max-tokens", type=int, default=20000, help="held-out tokens evaluated (0: all)")
    parser.add_argument("--tolerance", type=float, default=0.01, help="allowed relative perplexity above the peer's")
    args = parser.parse_args(argv)
    prepare(args.work, args.samples, args.length)
    result = crosscheck(args.work, args.peer_python, args.methods, args.max_tokens or None, args.tolerance)
    (args.work / "result.json").write_text(json.dumps(result, indent=2))
    print(markdown(result))
    worse = [r["method"] for r in result["rows"] if not r["ok"]]
    if worse:
        print(f"slmc is more than {args.tolerance:.0%} worse than the peer on: {', '.join(worse)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
