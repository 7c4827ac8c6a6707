"""Latency of compiled fixture-LM artifacts on this machine: original against compressed recipes.

Compiles ``fixture-lm`` for ``host`` once per recipe (no passes, then each recipe given), loads the
artifacts with ``slmc.load`` and times, interleaved round by round so that load from other processes
hits every variant alike: a prefill of ``--prompt`` tokens from the empty cache, and one decode step
(one token after a ``--prompt``-token cache). Reports the median and minimum over ``--rounds``.

    python benchmarks/compression_latency.py examples/recipes/lowrank-svd-20.yaml examples/recipes/fuse.yaml

Not a test: timings depend on the machine and its load (docs/quality.md records a run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np

from slmc.bench.timing import timed  # shared with `slmc bench`


def compile_variant(recipe: Path | None, out: Path, work: Path) -> Path:
    import slmc

    if recipe is None:
        recipe = work / "original.yaml"
        recipe.write_text("passes: []\nverify: {num_samples: 1, atol: 1.0e-3}\n")
    slmc.compile("fixture-lm", str(recipe), "host", out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+", type=Path)
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens (prefill) and cache length (decode)")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()

    import slmc

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        variants = {"original": compile_variant(None, work / "original", work)}
        for recipe in args.recipes:
            variants[recipe.stem] = compile_variant(recipe.resolve(), work / recipe.stem, work)
        models = {name: slmc.load(path) for name, path in variants.items()}
        sizes = {name: sum(f.stat().st_size for f in path.iterdir() if f.name == "weights.safetensors")
                 for name, path in variants.items()}
        rng = np.random.default_rng(0)
        ids = rng.integers(0, 4096, (1, args.prompt), dtype=np.int64)
        empty = {name: model.kv_cache.empty() for name, model in models.items()}  # head pruning shrinks the cache
        caches = {name: model.step(ids, *empty[name])[1:] for name, model in models.items()}
        one = ids[:, :1]
        times: dict[str, dict[str, list[float]]] = {name: {"prefill": [], "decode": []} for name in models}
        for _ in range(args.rounds):
            for name, model in models.items():
                times[name]["prefill"].append(timed(lambda: model.step(ids, *empty[name])))
                times[name]["decode"].append(timed(lambda: model.step(one, *caches[name])))
        report = {}
        for name, t in times.items():
            report[name] = {
                "parameters": models[name].manifest["model"]["compiled_parameters"],
                "kv_heads": models[name].kv_cache.kv_heads,
                "weights_bytes": sizes[name],
                **{f"{kind}_ms_median": round(1e3 * statistics.median(v), 3) for kind, v in t.items()},
                **{f"{kind}_ms_min": round(1e3 * min(v), 3) for kind, v in t.items()},
            }
        print(json.dumps({"prompt_tokens": args.prompt, "rounds": args.rounds, "variants": report}, indent=1))


if __name__ == "__main__":
    main()
