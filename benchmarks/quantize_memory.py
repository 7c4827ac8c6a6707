"""Peak memory of GPTQ / AWQ on a SmolLM-135M-shaped Llama (random weights), layer by layer on CPU.

Writes a SmolLM-135M-shaped checkpoint (hidden 576, 30 layers, 9 heads / 3 KV heads, MLP 1536,
vocab 49152, tied embeddings off so every linear is quantized) with random weights into a temporary
folder, then runs ``slmc.driver.compress`` (trace + the ``quantize`` pass) in a fresh process per method
and reports that process's peak RSS next to the RSS after loading and tracing alone.

    python benchmarks/quantize_memory.py [--methods gptq awq] [--samples 16] [--length 128]

Goal (issue 4): under 4 GB peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

SMOLLM_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                   num_key_value_heads=3, vocab_size=49152, max_position_embeddings=2048, rms_norm_eps=1e-5,
                   tie_word_embeddings=False, rope_theta=10000.0)


def write_checkpoint(folder: Path) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMOLLM_135M))
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def measure(folder: Path, method: str | None, samples: int, length: int, work: Path) -> dict:
    """Run in this process: load, trace, and (with a method) quantize; return peak RSS in MB."""
    import numpy as np

    from slmc.driver.compress import compress
    from slmc.models.huggingface import load_hf_model
    from slmc.spec.recipe import load_recipe
    from slmc.spec.target import load_target

    ids = np.random.default_rng(0).integers(0, SMOLLM_135M["vocab_size"], (samples, 1, length), dtype=np.int64)
    np.save(work / "calibration.npy", ids)
    passes = f"\n  - quantize: {{bits: 4, group_size: 32, method: {method}}}" if method else " []"
    (work / "recipe.yaml").write_text(f"max_context: {length}\npasses:{passes}\n"
                                      f"calibration: {{tensors: calibration.npy, num_samples: {samples}}}\n")
    spec = load_hf_model(folder, max_context=length)
    compressed = compress(spec, load_recipe(work / "recipe.yaml"), load_target("host"))
    layers = compressed.reports[0]["stats"]["layers_quantized"] if method else 0
    return {"method": method or "load+trace only", "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "layers_quantized": layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["gptq", "awq"])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        folder, method = Path(args.child[0]), args.child[1]
        with tempfile.TemporaryDirectory() as work:
            print(json.dumps(measure(folder, None if method == "none" else method, args.samples, args.length, Path(work))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "smollm-135m-shaped"
        params = write_checkpoint(folder)
        print(f"SmolLM-135M-shaped Llama, {params:,} parameters, random weights; calibration {args.samples} x {args.length} tokens")
        for method in ["none", *args.methods]:
            out = subprocess.run([sys.executable, __file__, "--samples", str(args.samples), "--length", str(args.length),
                                  "--child", str(folder), method], capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{result['method']:<18} peak RSS {result['peak_rss_mb']:8.0f} MB   layers quantized {result['layers_quantized']}")


if __name__ == "__main__":
    main()
