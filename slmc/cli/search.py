"""``slmc search MODEL -t TARGET``: find the recipe within a budget (docs/search.md)."""

from __future__ import annotations

from pathlib import Path

import click

from slmc.cli.output import emit_json, handles_errors


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, found {text!r}") from None


def _bits(text: str) -> tuple[int, ...]:
    values = _floats(text)
    if not values or any(v not in (4, 8, 32) for v in values):
        raise click.BadParameter(f"expected bit widths from 4, 8, 32 (float32), comma-separated, found {text!r}")
    return tuple(int(v) for v in values)


def _groups(text: str) -> tuple[int | None, ...]:
    try:
        return tuple(None if v.strip() == "pc" else int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated group sizes or 'pc' (per channel), found {text!r}") from None


@click.command("search")
@click.argument("model", default="fixture-lm")
@click.option("-t", "--target", default="host", show_default=True, help="Built-in target name or descriptor path.")
@click.option("--max-ppl-increase", type=click.FloatRange(0, None), default=None, help="Budget: relative perplexity increase (0.05 = 5%).")
@click.option("--min-cosine", type=click.FloatRange(-1, 1), default=None, help="Budget: mean logit cosine vs the original.")
@click.option("--max-size-bytes", type=click.IntRange(1, None), default=None, help="Budget: stored weight bytes.")
@click.option("--max-latency-ms", type=click.FloatRange(0, None), default=None, help="Budget: one decode step (ms).")
@click.option("--budget-minutes", type=click.FloatRange(0, None, min_open=True), default=None,
              help="Time budget: no trial starts after this many minutes of wall time (the baseline always runs); "
                   "the result names the candidates left out [default: no limit].")
@click.option("--sparsity", "sparsities", default="0,0.25,0.5", show_default=True, help="Unstructured sparsities to try.")
@click.option("--bits", default="32,8,4", show_default=True, help="Weight bits to try (32: float32, no quantize pass).")
@click.option("--group-sizes", default="pc,32,64,128", show_default=True, help="Group sizes ('pc': per channel); the target's list filters them.")
@click.option("--lowrank-ratios", default="0,0.1", show_default=True, help="Shares of linear parameters to remove by low-rank factorization.")
@click.option("--prune-method", type=click.Choice(["magnitude", "wanda", "sparsegpt"]), default="magnitude", show_default=True)
@click.option("--lowrank-method", type=click.Choice(["svd", "svd_llm"]), default="svd", show_default=True)
@click.option("--quantize-method", type=click.Choice(["rtn", "gptq", "awq"]), default="rtn", show_default=True)
@click.option("--text", default="stdlib-heldout", show_default=True, help="Evaluation text (file or built-in set).")
@click.option("--max-tokens", type=click.IntRange(2, None), default=8000, show_default=True, help="Tokens of the text each trial scores.")
@click.option("--latency", type=click.Choice(["auto", "measured", "model", "none"]), default="auto", show_default=True,
              help="auto: measured if the target runs here, else its cost model.")
@click.option("--workers", type=click.IntRange(1, None), default=1, show_default=True, help="Local trial processes.")
@click.option("--ray", "ray_address", default=None, help="Run the trials on the Ray cluster at HOST:PORT instead.")
@click.option("-o", "--output", "out", default="slmc-search", show_default=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handles_errors
def search_command(model: str, target: str, max_ppl_increase: float | None, min_cosine: float | None,
                   max_size_bytes: int | None, max_latency_ms: float | None, budget_minutes: float | None, sparsities: str, bits: str, group_sizes: str,
                   lowrank_ratios: str, prune_method: str, lowrank_method: str, quantize_method: str, text: str,
                   max_tokens: int, latency: str, workers: int, ray_address: str | None, out: Path, as_json: bool) -> None:
    """Explore sparsity x bits x group size x low-rank ratio of MODEL for TARGET within a budget; write the
    Pareto front (front.json, pareto.html) and the chosen recipe (chosen.yaml, for `slmc compile -r`)."""
    from slmc.search import Budget, EvalSettings, SearchSpace, search
    from slmc.search.report import write_report

    space = SearchSpace(_floats(sparsities), _bits(bits), _groups(group_sizes), _floats(lowrank_ratios),
                        prune_method, lowrank_method, quantize_method)
    budget = Budget(max_ppl_increase, min_cosine, max_size_bytes, max_latency_ms)
    result = search(model, target, budget, out, space=space, evaluation=EvalSettings(text, max_tokens), workers=workers,
                    ray_address=ray_address, latency=latency, minutes=budget_minutes)
    files = write_report(result, out)
    chosen = next(p for p in result.points if p["id"] == result.chosen)
    if as_json:
        emit_json({"ok": True, "chosen": result.chosen, "front": result.front, "files": {k: str(v) for k, v in files.items()},
                    "chosen_metrics": chosen, "time_budget": result.settings["time_budget"]})
        return
    click.echo(f"searched {len(result.points)} candidates of {model} for '{result.target}' ({len(result.excluded)} excluded by the target), "
               f"{max_tokens} tokens of {text} per trial")
    if result.not_run:
        click.echo(f"time budget of {budget_minutes:g} min spent: {len(result.not_run)} candidate(s) not run "
                   f"({', '.join(result.not_run)})")
    for p in result.points:
        if p["on_front"]:
            lat = f", {p['latency_ms']:.3f} ms" if p["latency_ms"] is not None else ""
            mark = "*" if p["id"] == result.chosen else " "
            click.echo(f" {mark} {p['id']}: perplexity {p['ppl_increase']:+.2%}, {p['size_bytes']} bytes{lat}")
    click.echo(f"chosen: {result.chosen} -> {files['chosen']}; front: {files['front']}; plot: {files['plot']}")
