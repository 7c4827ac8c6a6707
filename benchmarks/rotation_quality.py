"""Held-out perplexity of quantization recipes with and without the ``rotate`` pass in front (issue 21.2).

For every RECIPE the model (default ``fixture-lm``) is evaluated eagerly, as ``slmc eval MODEL -r RECIPE``
does, twice: the recipe as written, and the same recipe with ``- rotate: ROTATE`` as its first pass
(written next to the recipe as a hidden ``.RECIPE.rotated.yaml`` so that relative paths resolve, and
removed afterwards). Any recipe works, so a new scheme (``w4a8``) is measured by naming its recipe:

    python benchmarks/rotation_quality.py examples/recipes/w8a8.yaml examples/recipes/w8a8-smoothquant.yaml \\
        examples/recipes/int4-g32-rtn.yaml examples/recipes/int4-g32-gptq.yaml [--max-tokens 20000] [--rotate '{}']

Prints one markdown row per recipe (perplexity without / with rotation, both relative to the unquantized
model) for docs/quality.md. Goal (issue 21): with rotations, lower than without.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from heldout import add_heldout_arguments, heldout_perplexity


def rotated_copy(recipe: Path, rotate: dict) -> Path:
    """``recipe`` with ``rotate`` as its first pass, written beside it (relative paths keep resolving)."""
    document = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    document["passes"] = [{"rotate": rotate}] + list(document.get("passes") or [])
    path = recipe.parent / f".{recipe.stem}.rotated.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_heldout_arguments(parser, "+")
    parser.add_argument("--rotate", default="{}", help="settings of the rotate pass, as JSON")
    args = parser.parse_args()
    rotate = json.loads(args.rotate)
    base = heldout_perplexity(args.model, None, args.text, args.max_tokens)
    print(f"{args.model}: unquantized perplexity {base:.4f} on the first {args.max_tokens} tokens of {args.text}")
    print("| recipe | perplexity | with `rotate` | increase | with `rotate` |")
    print("|---|---|---|---|---|")
    for recipe in args.recipes:
        plain = heldout_perplexity(args.model, recipe, args.text, args.max_tokens)
        copy = rotated_copy(recipe, rotate)
        try:
            rotated = heldout_perplexity(args.model, copy, args.text, args.max_tokens)
        finally:
            copy.unlink()
        print(f"| `{recipe.stem}` | {plain:.4f} | {rotated:.4f} | {plain / base - 1:+.2%} | {rotated / base - 1:+.2%} |",
              flush=True)


if __name__ == "__main__":
    main()
