"""``slmc bench``: slmc artifacts against PyTorch eager and ONNX Runtime, with a measured roofline (docs/benchmarks.md).

Registered by slmc/cli/main.py (``cli.add_command(bench_command)``).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from slmc.cli.output import emit_json, handles_errors


@click.command("bench")
@click.argument("models", nargs=-1)
@click.option("-r", "--recipe", default=None, help="Recipe for the slmc artifact [default: fp32, no passes].")
@click.option("--engines", default="slmc,torch,ort-fp32,ort-int8", show_default=True, help="Comma-separated engines.")
@click.option("--contexts", default="128,512", show_default=True, help="Cache lengths for decode timing.")
@click.option("--prefill", default=128, show_default=True, type=int, help="Prompt tokens for prefill / TTFT.")
@click.option("--rounds", default=10, show_default=True, type=int, help="Timed rounds (interleaved across engines).")
@click.option("--threads", default=None, type=int, help="Threads for every engine [default: usable cores].")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None, help="Also write the JSON report here.")
@handles_errors
def bench_command(models: tuple[str, ...], recipe: str | None, engines: str, contexts: str, prefill: int, rounds: int,
                  threads: int | None, out: Path | None) -> None:
    """Benchmark MODELS (default fixture-lm; also smollm-135m, qwen2.5-0.5b, gpt2-124m) and print JSON."""
    from slmc.bench import machine
    from slmc.errors import InputError

    try:
        context_list = [int(c) for c in contexts.split(",") if c.strip()]
    except ValueError as exc:
        raise InputError(f"--contexts must be comma-separated integers, got {contexts!r}") from exc
    threads = threads or machine.cores()
    from slmc.bench.child import run_in_child
    from slmc.bench.run import check_settings

    args = dict(models=list(models) or ["fixture-lm"], recipe=recipe, prefill=prefill, rounds=rounds,
                engines=[e.strip() for e in engines.split(",") if e.strip()], contexts=context_list, threads=threads)
    check_settings(args["models"], args["engines"], context_list, prefill, rounds, threads)  # before the child starts
    report = run_in_child(args)
    if out is not None:
        out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    emit_json(report)
