"""The ``slmc`` command line: compile, run, generate, eval, targets, recipe check, device.

Exit codes: 0 success; 1 compile or verification failure; 2 bad input (recipe, descriptor, model
reference, arguments). ``--json`` prints exactly one JSON object on stdout, also on failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from slmc.cli.bench import bench_command
from slmc.cli.cache import cache_group
from slmc.cli.compile_summary import print_compile_summary
from slmc.cli.device import device_group
from slmc.cli.output import emit_json, handles_errors
from slmc.cli.package import package_command, print_package_summary, verify_bundle_command
from slmc.cli.search import search_command
from slmc.cli.tune import tune_command
from slmc.errors import InputError


def _version() -> str:
    from importlib.metadata import version

    return version("slmc")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=_version(), prog_name="slmc")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for errors, and the libraries' own notices (TVM's log).")
def cli(debug: bool) -> None:
    """slmc: compile a small language model with a recipe for a hardware target into a verified TVM artifact."""
    from slmc.backend import library_output

    library_output.set_debug(debug)


@cli.command("compile")
@click.option("-m", "--model", default=None, help="Built-in model name or 'package.module:factory' [default: recipe's model, else tiny-lm].")
@click.option("-r", "--recipe", default=None, help="Recipe YAML file or built-in recipe name (default: int4 + perplexity gate; cleanup: lossless) [default: default].")
@click.option("-t", "--target", default=None, help="Built-in target name or descriptor YAML [default: recipe's target, else host].")
@click.option("-o", "--out", default=None, type=click.Path(path_type=Path), help="Artifact directory [default: slmc-out/MODEL-TARGET].")
@click.option("--device", default=None, metavar="rpc://HOST:PORT",
              help="Verify on this TVM RPC server when the target does not run here (see 'slmc device arm64 up').")
@click.option("--require-execution", is_flag=True,
              help="Fail (exit 1) if the artifact is not executed anywhere (natively or on --device); without it, "
                   "its quality gates are measured on the host and the artifact checks are reported as not executed.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (artifact path, verification, ...) on stdout.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Compile cache directory [default: $SLMC_CACHE_DIR; neither: no cache].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the compile cache.")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None,
              help="Write report.json and report.html into this directory (docs/reports.md).")
@click.option("--junit", "junit_file", type=click.Path(path_type=Path), default=None,
              help="Write every verification check and quality gate as a JUnit XML test case.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr (bars on a terminal, else one plain line per stage, pass and count).")
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path), default=None,
              help="Also package the artifact as a deploy bundle in this directory (as 'slmc package').")
@click.option("--bundle-flavour", type=click.Choice(["dynamic", "static"]), default="dynamic", show_default=True,
              help="With --bundle: the bundle's flavour (as 'slmc package --flavour').")
@handles_errors
def compile_command(model: str | None, recipe: str | None, target: str | None, out: Path | None, device: str | None,
                    require_execution: bool, as_json: bool, cache_dir: Path | None, no_cache: bool, report_dir: Path | None,
                    junit_file: Path | None, quiet: bool, bundle_dir: Path | None, bundle_flavour: str) -> None:
    """Compile MODEL with RECIPE for TARGET into a verified artifact directory."""
    import time

    import slmc
    from slmc import progress
    from slmc.report.ci_outputs import compile_failure_outputs, compile_outputs, compile_suite

    progress.set_quiet(quiet)
    start = time.perf_counter()
    try:
        with progress.compile_stages():
            result = slmc.compile(model=model, recipe=recipe, target=target, out=out, device=device, cache_dir=cache_dir,
                                  use_cache=not no_cache, require_execution=require_execution)
    except slmc.SlmcError as exc:
        compile_failure_outputs(exc, report_dir, junit_file, compile_suite(model, target), time.perf_counter() - start)
        if as_json and isinstance(exc, slmc.VerificationError):
            emit_json({"ok": False, "artifact": None, "verification": exc.verification, "error": exc.to_json()})
            click.echo(f"error: {exc}", err=True)
            click.get_current_context().exit(exc.exit_code)
        raise
    compile_outputs(result, report_dir, junit_file)
    packaged = None
    if bundle_dir is not None:
        from slmc.driver.package import package_artifact

        packaged = package_artifact(result.artifact, bundle_dir, flavour=bundle_flavour)
    if as_json:
        emit_json({**result.to_json(), **({"bundle": packaged.to_json()} if packaged else {})})
    else:
        print_compile_summary(result)
        if packaged:
            print_package_summary(packaged)


@cli.command("run")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("-i", "--input", "inputs", multiple=True, required=True, type=click.Path(path_type=Path),
              help="A .npy file per model input, in the signature's order.")
@click.option("-o", "--output", default=None, type=click.Path(path_type=Path),
              help="Write the outputs: .npy for one output, .npz for several.")
@click.option("--json", "as_json", is_flag=True, help="Print the outputs' shapes and dtypes as JSON.")
@click.option("--device", default=None, metavar="rpc://HOST:PORT",
              help="Run the artifact on this TVM RPC server (e.g. an arm64 artifact on 'slmc device arm64 up').")
@handles_errors
def run_command(artifact: Path, inputs: tuple[Path, ...], output: Path | None, as_json: bool, device: str | None) -> None:
    """Run a compiled ARTIFACT directory on inputs from .npy files."""
    import numpy as np

    from slmc.artifact.remote_runtime import open_artifact

    arrays = []
    for path in inputs:
        try:
            arrays.append(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise InputError(f"--input {path}: not a readable .npy array: {exc}") from exc
    with open_artifact(artifact, device) as model:
        outs = model.run_numpy(*arrays)
    if output is not None:
        if len(outs) == 1:
            np.save(output, outs[0])
        else:
            np.savez(output, **{spec.name: o for spec, o in zip(model.outputs, outs)})
    summary = [{"name": spec.name, "shape": list(o.shape), "dtype": str(o.dtype)} for spec, o in zip(model.outputs, outs)]
    if as_json:
        emit_json({"ok": True, "outputs": summary, "written": str(output) if output else None})
    else:
        for s in summary:
            click.echo(f"{s['name']}: shape {s['shape']} dtype {s['dtype']}")
        if output is not None:
            click.echo(f"wrote {output}")


@cli.command("verify")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print what was checked and measured as JSON.")
@click.option("--device", default=None, metavar="rpc://HOST:PORT",
              help="Run the artifact on this TVM RPC server (e.g. an arm64 artifact on 'slmc device arm64 up').")
@handles_errors
def verify_command(artifact: Path, as_json: bool, device: str | None) -> None:
    """Re-check ARTIFACT: every file against the manifest's sha256 and size, then its outputs on the
    verification inputs stored at compile time, within the recorded tolerance: where its target runs
    here, or on --device (an artifact for another machine without --device: files only, and it says so).
    A deploy bundle (slmc package): every file against bundle.json's sha256 and size."""
    from slmc.artifact.bundle import is_bundle
    from slmc.verify.artifact_check import verify_artifact

    if is_bundle(artifact):
        return verify_bundle_command(artifact, as_json)  # a deploy bundle (slmc package): every file against bundle.json
    report = verify_artifact(artifact, device)
    if as_json:
        emit_json({"ok": True, **report})
        return
    if not report["outputs_rechecked"]:
        click.echo(f"verified {artifact}: {report['files_checked']} files match the manifest (sha256, size); "
                   f"{report['reason']}")
        return
    n = report["artifact_vs_recorded"]
    click.echo(f"verified {artifact}: {report['files_checked']} files match the manifest (sha256, size); outputs on "
               f"{report['samples']} stored samples within atol {n['atol']:g}, rtol {n['rtol']:g} of the recorded "
               f"eager outputs (max abs error {n['max_abs_error']:.3g}"
               + (f"; run on {device})" if device is not None else ")"))


@cli.command("generate")
@click.argument("subject")
@click.option("-p", "--prompt", required=True, help="Text to continue.")
@click.option("-n", "--max-new-tokens", default=32, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--json", "as_json", is_flag=True, help="Print the tokens, text and speed (ttft_ms, decode_tokens_per_s) as JSON.")
@click.option("--device", default=None, metavar="rpc://HOST:PORT",
              help="Run the artifact on this TVM RPC server (e.g. an arm64 artifact on 'slmc device arm64 up').")
@handles_errors
def generate_command(subject: str, prompt: str, max_new_tokens: int, as_json: bool, device: str | None) -> None:
    """Greedy generation with SUBJECT (an artifact directory or a model) through its KV cache; then its
    speed: time to first token (the prompt's prefill) and decoded tokens per second."""
    import time

    from slmc.graph.kv_cache import generate_greedy
    from slmc.driver.eval_subject import open_subject

    model = open_subject(subject, device=device)
    tokenizer = model.require_tokenizer()
    ids = tokenizer.encode(prompt)
    step = model.step
    call_seconds: list[float] = []  # [prefill, decode, decode, ...]

    def timed_step(*arrays: Any) -> Any:
        start = time.perf_counter()
        out = step(*arrays)
        call_seconds.append(time.perf_counter() - start)
        return out

    try:
        result = generate_greedy(timed_step, model.kv_cache, ids, max_new_tokens)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    text = tokenizer.decode(result.tokens)
    ttft_ms = 1000.0 * call_seconds[0]
    decode_seconds = sum(call_seconds[1:])
    # The first token comes from the prefill; each decode call gives one more.
    decode_tps = (len(call_seconds) - 1) / decode_seconds if decode_seconds > 0 else None
    speed = {"prompt_tokens": len(ids), "generated_tokens": len(result.tokens), "ttft_ms": ttft_ms,
             "decode_tokens_per_s": decode_tps}
    if as_json:
        emit_json({"ok": True, **speed, "tokens": result.tokens, "text": text})
        return
    click.echo(prompt + text)
    rate = f"{decode_tps:.1f} tokens/s" if decode_tps is not None else "n/a (one token: no decode step)"
    click.echo(f"\n[{model.description}: {len(ids)} prompt tokens, {len(result.tokens)} generated; "
               f"time to first token {ttft_ms:.1f} ms; decode {rate}]")


def _eval_causal_lm(model: Any, reference: Any, text_ref: str, window: int, stride: int, max_tokens: int | None) -> dict[str, Any]:
    from dataclasses import replace

    from slmc.verify.evaluation import compare, document_tokens, perplexity
    from slmc.data.texts import load_texts

    docs = document_tokens(load_texts(text_ref), model.require_tokenizer(), max_tokens)
    result: dict[str, Any] = {"subject": model.description, "task": model.task, "text": text_ref,
                              **perplexity(model.step, model.kv_cache, docs, window, stride)}
    if reference is not None:
        ref_cache = model.kv_cache if reference.kv_cache is None else replace(model.kv_cache, kv_heads=reference.kv_cache.kv_heads)
        result["reference"] = {"subject": reference.description, **perplexity(reference.step, ref_cache, docs, window, stride)}
        result["perplexity_change"] = result["perplexity"] / result["reference"]["perplexity"] - 1.0  # relative, vs the reference
        result["comparison"] = compare(model.step, reference.step, model.kv_cache, docs, window, stride, ref_cache)
    return result


def _eval_embedding(model: Any, reference: Any, text_ref: str) -> dict[str, Any]:
    from slmc.data.texts import sentences
    from slmc.verify.evaluation import embedding_agreement
    from slmc.data.texts import load_texts

    if reference is None:
        raise InputError("evaluating an embedding model needs --reference (the model to compare embeddings with)")
    lines = sentences(load_texts(text_ref))
    return {"subject": model.description, "task": model.task, "text": text_ref, "reference": {"subject": reference.description},
            "comparison": embedding_agreement(model.run, reference.run, model.require_tokenizer(), lines)}


@cli.command("eval")
@click.argument("subject")
@click.option("--text", "text_ref", default=None,
              help="UTF-8 text file (for embedding models: one sentence per line), or a built-in text set (stdlib-heldout) "
                   "[default: the model's own held-out text, e.g. stdlib-heldout for fixture-lm and its artifacts].")
@click.option("--reference", default=None, help="Artifact or model to compare against.")
@click.option("--window", default=256, show_default=True, type=click.IntRange(2, None))
@click.option("--stride", default=128, show_default=True, type=click.IntRange(1, None))
@click.option("--max-tokens", default=None, type=click.IntRange(2, None), help="Evaluate only the first N tokens.")
@click.option("-r", "--recipe", default=None,
              help="Run this recipe's passes on the model first and measure the compressed graph eagerly.")
@click.option("-t", "--target", default=None, help="Target the recipe's passes are run for [default: recipe's target, else host].")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--gate", "gate_options", multiple=True, metavar="NAME=VALUE",
              help="A quality gate against --reference (min_top1_agreement, max_abs_error, min_cosine, "
                   "max_perplexity_increase=5%); repeatable; a failed gate exits 1.")
@click.option("--junit", "junit_file", type=click.Path(path_type=Path), default=None,
              help="Write each gate as a JUnit XML test case.")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None,
              help="Write report.json and report.html of the artifact SUBJECT, with this evaluation as its quality.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr (bars on a terminal, else one plain line per stage, pass and count).")
@click.option("--device", default=None, metavar="rpc://HOST:PORT",
              help="Run the SUBJECT artifact on this TVM RPC server (--reference runs here).")
@handles_errors
def eval_command(subject: str, text_ref: str, reference: str | None, window: int, stride: int,
                 max_tokens: int | None, recipe: str | None, target: str | None, as_json: bool,
                 gate_options: tuple[str, ...], junit_file: Path | None, report_dir: Path | None, quiet: bool,
                 device: str | None) -> None:
    """Quality of SUBJECT (artifact directory or model): perplexity for causal LMs (with logit error,
    top-1 agreement and KL against --reference), embedding cosine against --reference for encoders."""
    from slmc import progress
    from slmc.driver.eval_subject import open_subject

    progress.set_quiet(quiet)

    if target is not None and recipe is None:
        raise InputError("--target applies only with --recipe (the passes are run for that target)")
    if report_dir is not None and (recipe is not None or not (Path(subject) / "manifest.json").is_file()):
        raise InputError(f"--report describes a compiled artifact: SUBJECT {subject!r} must be an artifact directory "
                         "(holding manifest.json), without --recipe")
    model = open_subject(subject, recipe, target, device)
    if text_ref is None:
        if model.heldout_text is None:
            raise InputError(f"{model.description} has no held-out text of its own: give --text (a UTF-8 file or a built-in "
                             f"text set)")
        text_ref = model.heldout_text
    ref = open_subject(reference) if reference is not None else None
    if model.task == "causal-lm":
        result = _eval_causal_lm(model, ref, text_ref, window, stride, max_tokens)
    elif model.task == "embedding":
        result = _eval_embedding(model, ref, text_ref)
    else:
        raise InputError(f"{model.description} is a {model.task!r} model; slmc eval measures causal LMs and embedding models")
    from slmc.report.ci_outputs import check_eval_gates

    failed = check_eval_gates(result, gate_options, junit_file, f"slmc.eval.{subject}")
    if report_dir is not None:
        from slmc.report.report_files import write_eval_report

        write_eval_report(subject, result, report_dir)
    if as_json:
        emit_json({"ok": failed is None, **result})
    else:
        _print_eval(result)
    if failed is not None:
        click.echo(f"error: {failed}", err=True)
        click.get_current_context().exit(failed.exit_code)


def _print_eval(result: dict[str, Any]) -> None:
    if "perplexity" in result:
        versus = ""
        if "perplexity_change" in result:
            versus = f" (reference {result['reference']['perplexity']:.4f}, {result['perplexity_change']:+.2%})"
        click.echo(f"{result['subject']}: perplexity {result['perplexity']:.4f}{versus} over {result['tokens_scored']} tokens "
                   f"of {result['text']} in {result['documents']} document(s) (window {result['window']}, stride {result['stride']})")
        if "perplexity" in result.get("reference", {}):
            click.echo(f"{result['reference']['subject']}: perplexity {result['reference']['perplexity']:.4f}")
    c = result.get("comparison")
    if c is not None and "top1_agreement" in c:
        click.echo(f"vs reference: max logit error {c['max_logit_error']:.3g}, mean {c['mean_logit_error']:.3g}, "
                   f"top-1 agreement {c['top1_agreement']:.4f}, KL {c['kl_divergence']:.3g}")
    elif c is not None:
        click.echo(f"vs {result['reference']['subject']}: embedding cosine mean {c['mean_cosine']:.6f}, "
                   f"min {c['min_cosine']:.6f} over {c['sentences']} sentences")
    for g in result.get("gates", []):
        click.echo(f"gate {g['gate']}: measured {g['measured']:.6g}, threshold {g['threshold']:g}: {'pass' if g['passed'] else 'FAIL'}")


@cli.group("targets", invoke_without_command=True)
@click.pass_context
def targets_group(ctx: click.Context) -> None:
    """List the built-in targets (or `show NAME` for one, resolved)."""
    if ctx.invoked_subcommand is not None:
        return
    from slmc.spec.target import builtin_target_names, load_target

    for name in builtin_target_names():
        t = load_target(name)
        click.echo(f"{name:<20} {t.kind:<4} {t.description}")


@targets_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of YAML.")
@handles_errors
def targets_show(name: str, as_json: bool) -> None:
    """Print the descriptor NAME (built-in name or file) with `native` fields resolved."""
    import yaml

    from slmc.spec.target import load_target

    data = load_target(name).model_dump(mode="json")
    if as_json:
        emit_json(data)
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@cli.group("recipe")
def recipe_group() -> None:
    """Work with recipe files."""


@recipe_group.command("check")
@click.argument("recipe")
@click.option("-t", "--target", default=None, help="Also check the recipe against this target.")
@click.option("--json", "as_json", is_flag=True, help="Print the normalized recipe as JSON.")
@handles_errors
def recipe_check(recipe: str, target: str | None, as_json: bool) -> None:
    """Validate RECIPE (schema, pass settings, pass order), optionally against a target."""
    from slmc.spec.recipe import check_against_target, load_recipe
    from slmc.spec.target import load_target

    parsed = load_recipe(recipe)
    target_name = target or parsed.document.target
    if target_name:
        check_against_target(parsed, load_target(target_name))
    if as_json:
        emit_json({"ok": True, "recipe": parsed.normalized(), "target": target_name})
    else:
        names = " -> ".join(s.name for s in parsed.steps) or "(no passes)"
        against = f" against target '{target_name}'" if target_name else ""
        click.echo(f"ok: {parsed.source}{against}: {names}")


cli.add_command(device_group)  # 'slmc device' (docs/devices.md)
cli.add_command(cache_group)  # 'slmc cache ls/prune'
cli.add_command(search_command)  # 'slmc search' (docs/search.md)
cli.add_command(tune_command)  # 'slmc tune' (docs/tuning.md)
cli.add_command(package_command)  # 'slmc package' (docs/runtime.md)
cli.add_command(bench_command)  # 'slmc bench' (docs/benchmarks.md)


def main() -> None:
    """Console entry point (click's standalone mode: usage errors exit 2)."""
    import warnings

    # torch.export's pytree emits this on every trace; it is torch's internal deprecation, not the user's.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning)
    cli(prog_name="slmc")
