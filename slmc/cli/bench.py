"""``slmc bench``: slmc against llama.cpp, ONNX Runtime and PyTorch, each engine in processes of its own (docs/benchmarks.md).

Registered by slmc/cli/main.py (``cli.add_command(bench_command)``).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from slmc.cli.output import emit_json, handles_errors

DEFAULT_ENGINES = "slmc,slmc@1t,slmc-native,llama-cpp-q4_0,llama-cpp-q8_0,ort-int4,ort-int8,ort-fp32,torch"


def _integers(option: str, text: str) -> list[int]:
    from slmc.errors import InputError

    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError as exc:
        raise InputError(f"{option} must be comma-separated integers, got {text!r}") from exc


@click.command("bench")
@click.argument("models", nargs=-1)
@click.option("-r", "--recipe", "recipes", multiple=True, default=(), type=click.Path(path_type=Path),
              help="Recipe for the slmc artifact [default: int4 g32 RTN weight-only]; repeat it to measure each recipe's "
                   "artifact as its own engines slmc[<file stem>] (the goals judge the first).")
@click.option("--engines", default=DEFAULT_ENGINES, show_default=True, help="Comma-separated engines; '@<n>t' after one measures it once more on n threads "
                   "(slmc@1t: issue 22's two-threads-vs-one goal).")
@click.option("--contexts", default="128,1024,2000", show_default=True, help="Cache lengths for decode timing.")
@click.option("--prefill", default="128,1024", show_default=True, help="Prompt lengths for prefill / TTFT.")
@click.option("--repeats", default=3, show_default=True, type=int,
              help="Measuring processes per engine (engines alternated round-robin).")
@click.option("--steps", default=10, show_default=True, type=int, help="Timed decode steps per context in each process.")
@click.option("--prefill-repeats", default=2, show_default=True, type=int, help="Timed prefills per length in each process.")
@click.option("--thread-policy", default="engine-default", show_default=True,
              help="engine-default: every engine its own threading; common-passive: --threads for all, passive waits.")
@click.option("--threads", default=None, type=int, help="Threads per engine under --thread-policy common-passive [default: usable cores].")
@click.option("--evict-llc", is_flag=True, default=False,
              help="Also time every decode step with the last level cache evicted first (a 2x-LLC buffer written in the "
                   "engine's own process between its steps): cold beside warm per-step times.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None, help="Also write the JSON report here.")
@click.option("--markdown", "markdown_out", type=click.Path(path_type=Path), default=None,
              help="Also write the tables and goals as markdown here.")
@handles_errors
def bench_command(models: tuple[str, ...], recipes: tuple[Path, ...], engines: str, contexts: str, prefill: str, repeats: int,
                  steps: int, prefill_repeats: int, thread_policy: str, threads: int | None, evict_llc: bool,
                  out: Path | None, markdown_out: Path | None) -> None:
    """Benchmark MODELS (default fixture-lm; also smollm-135m, qwen2.5-0.5b, gpt2-124m) and print JSON."""
    from slmc.bench.run import check_settings, run_bench
    from slmc.bench.table import goals_markdown, machine_lines, markdown, processes_markdown

    args = dict(models=list(models) or ["fixture-lm"], engines=[e.strip() for e in engines.split(",") if e.strip()],
                contexts=_integers("--contexts", contexts), prefills=_integers("--prefill", prefill), repeats=repeats,
                steps=steps, recipes=list(recipes))
    check_settings(**args, policy=thread_policy, threads=threads)  # before anything is prepared
    report = run_bench(**args, prefill_repeats=prefill_repeats, thread_policy_name=thread_policy, threads=threads,
                       evict_llc=evict_llc)
    if out is not None:
        out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if markdown_out is not None:
        markdown_out.write_text("\n\n".join([markdown([report]), processes_markdown([report]), goals_markdown([report]),
                                             machine_lines(report)]) + "\n")
    emit_json(report)
